#include "table.hpp"

#include <algorithm>

namespace tiercache::cli {

std::string Table::text(const std::string& indent) const {
    std::vector<std::size_t> widths;
    for (const auto& row : rows_) {
        if (widths.size() < row.size()) widths.resize(row.size(), 0);
        for (std::size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
    }
    std::string out;
    for (const auto& row : rows_) {
        std::string line = indent;
        for (std::size_t c = 0; c < row.size(); ++c) {
            const std::string padding(widths[c] - row[c].size(), ' ');
            if (c > 0) line += "  ";
            const bool left = c == 0 || values_ == Values::left;
            line += left ? row[c] + padding : padding + row[c];
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out += line + "\n";
    }
    return out;
}

void Table::print(std::FILE* out, const std::string& indent) const { std::fputs(text(indent).c_str(), out); }

}  // namespace tiercache::cli
