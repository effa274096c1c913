// A plain-text table with aligned columns.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace tiercache::cli {

// The first column is left-aligned (names); the others are right-aligned (numbers) or,
// for a key-value list of text, left-aligned too. Columns are separated by two spaces.
class Table {
public:
    enum class Values { right, left };
    explicit Table(Values values = Values::right) : values_(values) {}

    void add_row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
    void print(std::FILE* out, const std::string& indent = "") const;
    // The printed text, one line per row (a live view builds a whole frame before drawing it).
    std::string text(const std::string& indent = "") const;

private:
    Values values_;
    std::vector<std::vector<std::string>> rows_;
};

}  // namespace tiercache::cli
