// A record: bytes [offset, offset + length) of one file of the dataset, what a loader reads
// from a packed dataset (a tar shard's member, an LMDB value, an HDF5 chunk, a Parquet row
// group). A whole file is the record {file, 0, its size}, so a dataset of small files
// (ImageFolder) is a dataset of whole-file records.
//
// Plans name records (Cache::set_plan, the mount's plan file: `PATH OFFSET LENGTH`), the
// cache reads one (Cache::read(record, dest)) and the EpochLoader batches them. The cache
// keeps extents (extent.hpp), not records: a record touches the extents its bytes lie in,
// and several records may share one extent (a tar shard of small members).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "catalog.hpp"

namespace tiercache {

struct Record {
    SampleId file = 0;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;

    friend bool operator==(const Record&, const Record&) = default;
};

// The whole of file `id`.
inline Record whole_file(const Catalog& catalog, SampleId id) { return {id, 0, catalog.size_of(id)}; }

// Why `r` is not a record of `catalog`, or empty: a file outside it, an offset + length that
// overflows, bytes past the end of the file. A record of length 0 (an empty tar member) is
// legal anywhere inside the file, its end included.
inline std::string record_problem(const Catalog& catalog, const Record& r) {
    if (!catalog.contains(r.file))
        return "file id " + std::to_string(r.file) + " is outside the catalog (" + std::to_string(catalog.size()) + " files)";
    const std::uint64_t size = catalog.size_of(r.file);
    const std::string where = "record at offset " + std::to_string(r.offset) + " length " + std::to_string(r.length) + " of '" +
                              std::string(catalog.path(r.file)) + "' (" + std::to_string(size) + " bytes)";
    if (r.length > UINT64_MAX - r.offset) return where + ": offset + length overflows";
    if (r.offset + r.length > size) return where + ": ends past the end of the file";
    return {};
}

// Throws std::invalid_argument with record_problem()'s message unless `r` is a record of `catalog`.
inline void check_record(const Catalog& catalog, const Record& r) {
    if (std::string problem = record_problem(catalog, r); !problem.empty()) throw std::invalid_argument("tiercache: " + problem);
}

}  // namespace tiercache
