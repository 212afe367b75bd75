// safetensors files: the weight format of the layer front end (names "<layer name>/<weight name>").
//
// Layout: an 8-byte little-endian uint64 N, N bytes of UTF-8 JSON header, then the data buffer. The
// header is a JSON object mapping each tensor name to {"dtype": ..., "shape": [...], "data_offsets":
// [begin, end]} (byte offsets relative to the start of the data buffer, row-major little-endian
// elements), plus an optional "__metadata__" object of string values.
//
// Reading validates the whole file before anything is returned: the header length (at most 100 MB and
// within the file), the JSON (an object, no duplicate keys at any depth), every entry (known keys of
// the right types, a supported dtype, non-negative dimensions whose byte size does not overflow,
// end - begin equal to that byte size) and the data buffer, which the tensors must cover exactly, in
// any order, with no overlap, hole or trailing byte (as the reference implementation requires). The header
// is read in one pass, an entry at a time, each checked when it is complete (no JSON tree of the whole
// header; an entry's objects hold at most 16 keys, its arrays 64 values, and the header nests at most 4
// deep): a bad entry is reported before anything later in the text is read, so a junk header fails at its
// first entry. Memory grows with the entries read (names, shapes, offsets) and with __metadata__, which is
// kept whole.
//
// Writing is deterministic: header keys sorted, the header padded with spaces so the data starts at an
// 8-byte aligned file offset, tensors laid out in name order. write_safetensors writes "<path>.tmp"
// and renames it over `path`, so a failed write leaves no partial file behind.
//
// Everything here is host code: no device memory, no CUDA call. Functions never throw; errors are a
// Status with last_error_message() "safetensors: <file or 'buffer'>: <what>".
#ifndef CULAYERS_NN_SAFETENSORS_HPP_
#define CULAYERS_NN_SAFETENSORS_HPP_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {

/// One tensor: `data` holds numel * dtype_size(dtype) bytes, row-major, little-endian (host order on
/// every platform culayers supports). A rank-0 shape is a scalar ("shape": [] in the file).
struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::kFloat32;
  Shape shape;
  std::vector<std::uint8_t> data;
};

/// The contents of a safetensors file. Tensors read from a file are in name order; for writing any
/// order is accepted (names must be unique).
struct SafetensorsFile {
  std::map<std::string, std::string> metadata; ///< "__metadata__"; omitted from the file when empty
  std::vector<SafetensorsTensor> tensors;

  /// The tensor called `name`, or null.
  const SafetensorsTensor* find(const std::string& name) const;
};

/// The safetensors spelling of `dtype`: "F32", "F16", "BF16", "I32", "U8", "I64". A static string,
/// never null; "" for a value that is not a DType enumerator.
const char* safetensors_dtype_name(DType dtype) noexcept;

/// Inverse of safetensors_dtype_name. kErrorParse ("unsupported dtype") for any other name, including
/// valid safetensors dtypes culayers has no DType for (F64, I8, BOOL, ...); kErrorNullPointer for a null
/// `out`. *out is unchanged on failure.
[[nodiscard]] Status safetensors_dtype_from_name(const std::string& name, DType* out);

/// Parses a complete file image of `size` bytes. `what` names the source in error messages. Errors:
/// kErrorParse for anything malformed (see the file comment), kErrorNullPointer for a null `out` (or
/// null `bytes` with size > 0), kErrorOutOfMemory. *out is replaced only on success.
[[nodiscard]] Status parse_safetensors(const void* bytes, std::size_t size, SafetensorsFile* out,
                                       const char* what = "buffer");

/// Reads and parses the file at `path`; tensor data is read straight into the tensors (the file is
/// not held in memory twice). kErrorIO when the file cannot be opened or read (missing, a directory,
/// a read error), otherwise as parse_safetensors. *out is replaced only on success.
[[nodiscard]] Status read_safetensors(const std::string& path, SafetensorsFile* out);

/// The file image of `file`. Errors (nothing written to *out): kErrorInvalidValue for the reserved name
/// "__metadata__", a duplicate name, a name or metadata string that is not valid UTF-8, or data whose
/// size differs from numel * dtype_size; kErrorInvalidDType; kErrorInvalidShape / kErrorSizeLimit for
/// an invalid shape; kErrorNullPointer; kErrorOutOfMemory.
[[nodiscard]] Status serialize_safetensors(const SafetensorsFile& file, std::vector<std::uint8_t>* out);

/// Writes the image of `file` to "<path>.tmp", then renames it to `path` (replacing an existing
/// file). The same argument errors as serialize_safetensors (checked before any file is created);
/// kErrorIO when the temporary file cannot be created, written or renamed, in which case it is
/// removed and `path` is untouched.
[[nodiscard]] Status write_safetensors(const std::string& path, const SafetensorsFile& file);

} // namespace nn
CULAYERS_NAMESPACE_END

#endif // CULAYERS_NN_SAFETENSORS_HPP_
