// safetensors reading and writing (include/culayers/nn/safetensors.hpp).
#include "culayers/nn/safetensors.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <new>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "layers/config_util.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {

namespace {

using Json = nlohmann::json;

/// The reference implementation's cap on the header length: a larger N is rejected before anything is
/// allocated for it.
constexpr std::uint64_t kMaxHeaderBytes = 100000000;
constexpr std::size_t kLengthBytes = 8;
constexpr const char* kMetadataKey = "__metadata__";
/// Nesting limit of the header JSON: a valid header nests 3 deep (the header object, an entry, its shape
/// and data_offsets arrays; __metadata__ holds strings); the fourth level lets the entry checks name a
/// nested value ("dimension of type array"). Deeper is never valid, and the bound keeps one entry small
/// while it is read (arrays of 64 values nested 128 deep, serde_json's default limit, let one entry of
/// 34 MB of text take 350 MB before its check).
constexpr int kMaxDepth = 4;
/// Values one array of the header may hold (a shape or data_offsets; see parse_header).
constexpr std::size_t kMaxArrayValues = 64;
/// Keys one object inside a tensor entry may hold (an entry has 3; see parse_header).
constexpr std::size_t kMaxEntryKeys = 16;

Status fail(Status status, const std::string& what, const std::string& message) {
  return ::culayers::detail::set_error(status, "safetensors: %s: %s", what.c_str(), message.c_str());
}

Status parse_fail(const std::string& what, const std::string& message) {
  return fail(Status::kErrorParse, what, message);
}

/// `s` in double quotes for a message; long names are cut (the message buffer holds 1 KB anyway).
std::string in_quotes(const std::string& s) {
  constexpr std::size_t kMaxShown = 200;
  return s.size() <= kMaxShown ? "\"" + s + "\"" : "\"" + s.substr(0, kMaxShown) + "\"...";
}

std::uint64_t load_u64_le(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) {
    v = (v << 8) | p[i];
  }
  return v;
}

void store_u64_le(std::uint64_t v, std::uint8_t* p) {
  for (int i = 0; i < 8; ++i) {
    p[i] = static_cast<std::uint8_t>(v >> (8 * i));
  }
}

/// One validated header entry.
struct Entry {
  std::string name;
  DType dtype = DType::kFloat32;
  Shape shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

/// A validated header: metadata, entries in name order, and the order in which the entries' bytes
/// appear in the data buffer (indices into `entries`).
struct Header {
  std::map<std::string, std::string> metadata;
  std::vector<Entry> entries;
  std::vector<std::size_t> file_order;
};

/// The dimension `d` of an entry's "shape" as int64, or an error message.
bool read_dimension(const Json& d, std::int64_t* out, std::string* error) {
  if (d.is_number_unsigned()) {
    const std::uint64_t v = d.get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(INT64_MAX)) {
      *error = "dimension " + std::to_string(v) + " overflows int64";
      return false;
    }
    *out = static_cast<std::int64_t>(v);
    return true;
  }
  if (d.is_number_integer()) {
    const std::int64_t v = d.get<std::int64_t>();
    if (v < 0) {
      *error = "dimension " + std::to_string(v) + " is negative";
      return false;
    }
    *out = v;
    return true;
  }
  // Only scalars are printed: a nested value could be arbitrarily deep (and dump() recurses).
  *error = "dimension " + (d.is_primitive() ? d.dump() : std::string("of type ") + d.type_name()) +
           " is not a non-negative integer";
  return false;
}

/// Parses and checks one tensor entry (everything but its place in the data buffer).
Status parse_entry(const std::string& what, const std::string& name, const Json& value,
                   std::uint64_t buffer_bytes, Entry* out) {
  const std::string where = "tensor " + in_quotes(name) + ": ";
  if (!value.is_object()) {
    return parse_fail(what, where + "entry is not a JSON object");
  }
  for (const auto& item : value.items()) {
    if (item.key() != "dtype" && item.key() != "shape" && item.key() != "data_offsets") {
      return parse_fail(what, where + "unknown key " + in_quotes(item.key()));
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(key)) {
      return parse_fail(what, where + "missing key " + in_quotes(key));
    }
  }

  Entry entry;
  entry.name = name;
  const Json& dtype = value.at("dtype");
  if (!dtype.is_string()) {
    return parse_fail(what, where + "dtype: is not a string");
  }
  if (Status s = safetensors_dtype_from_name(dtype.get<std::string>(), &entry.dtype); !ok(s)) {
    return parse_fail(what, where + "dtype: unsupported dtype " + in_quotes(dtype.get<std::string>()));
  }

  const Json& shape = value.at("shape");
  if (!shape.is_array()) {
    return parse_fail(what, where + "shape: is not an array");
  }
  if (shape.size() > static_cast<std::size_t>(kMaxRank)) {
    return parse_fail(what, where + "shape: rank " + std::to_string(shape.size()) +
                                " exceeds the maximum rank " + std::to_string(kMaxRank));
  }
  std::int64_t dims[kMaxRank] = {};
  // Shape's validity rule: the product of the non-zero dimensions fits in int64 (a zero dimension makes
  // the tensor empty whatever the others are).
  std::int64_t nonzero_product = 1;
  bool has_zero = false;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    std::string error;
    if (!read_dimension(shape[i], &dims[i], &error)) {
      return parse_fail(what, where + "shape: " + error);
    }
    if (dims[i] == 0) {
      has_zero = true;
    } else if (!::culayers::detail::checked_mul(nonzero_product, dims[i], &nonzero_product)) {
      return parse_fail(what, where + "shape: the element count overflows int64");
    }
  }
  const std::int64_t numel = has_zero ? 0 : nonzero_product;
  std::int64_t bytes = 0;
  if (!::culayers::detail::checked_mul(numel, static_cast<std::int64_t>(dtype_size(entry.dtype)), &bytes)) {
    return parse_fail(what, where + "shape: the byte size overflows int64");
  }
  if (Status s = Shape::make(dims, static_cast<int>(shape.size()), &entry.shape); !ok(s)) {
    return parse_fail(what, where + "shape: " + last_error_message()); // unreachable after the checks above
  }

  const Json& offsets = value.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return parse_fail(what, where + "data_offsets: is not an array of two non-negative integers");
  }
  entry.begin = offsets[0].get<std::uint64_t>();
  entry.end = offsets[1].get<std::uint64_t>();
  if (entry.end < entry.begin) {
    return parse_fail(what, where + "data_offsets: end " + std::to_string(entry.end) + " is before begin " +
                                std::to_string(entry.begin));
  }
  if (entry.end - entry.begin != static_cast<std::uint64_t>(bytes)) {
    return parse_fail(
        what, where + "data_offsets: [" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) +
                  ") holds " + std::to_string(entry.end - entry.begin) + " bytes, but " +
                  dtype.get<std::string>() + " " + shape.dump() + " needs " + std::to_string(bytes));
  }
  if (entry.end > buffer_bytes) {
    return parse_fail(what, where + "data_offsets: end " + std::to_string(entry.end) +
                                " is beyond the data buffer (" + std::to_string(buffer_bytes) + " bytes)");
  }
  *out = std::move(entry);
  return Status::kSuccess;
}

/// Parses and validates the header text against a data buffer of `buffer_bytes` bytes.
Status parse_header(const std::string& what, const char* text, std::size_t length, std::uint64_t buffer_bytes,
                    Header* out) {
  if (length == 0 || text[0] != '{') {
    // Checked before the parse, so " {" (or a byte order mark, which nlohmann-json skips like blanks) is
    // refused as such, not for whatever its first entry holds. These are all the parser skips before a
    // value, so an object root found by the parse starts at text[0]. Any other first character is left to
    // the parse ("[1]": not an object; "x": not JSON).
    const char* first = text;
    const char* const end = text + length;
    if (end - first >= 3 && std::memcmp(first, "\xEF\xBB\xBF", 3) == 0) {
      first += 3;
    }
    while (first != end && (*first == ' ' || *first == '\t' || *first == '\n' || *first == '\r')) {
      ++first;
    }
    if (first != end && *first == '{') {
      return parse_fail(what, "header does not start with '{'");
    }
  }
  // One SAX pass (config_util::parse_json_members) checks duplicate keys (nlohmann's objects keep the last
  // one silently), the nesting depth (a valid header nests 3 deep; older nlohmann-json releases destroy
  // deep values recursively), array lengths (shapes have at most kMaxRank dimensions and data_offsets 2
  // values: a longer array can only be garbage) and the keys of an entry's objects (an entry has 3), so one
  // entry holds a few hundred values at most. It hands over one tensor entry at a time, checked as soon as
  // it is complete; the header's tree is never built (100 MB of small junk entries took 10 s and 1 GB or
  // more as a tree before the first entry was checked). Held at once: the entries read so far (names,
  // dtypes, shapes, offsets), the names' duplicate check, the entry being read, and __metadata__
  // (free-form strings, kept whole as before).
  config_util::JsonChecks checks;
  checks.max_depth = kMaxDepth;
  checks.reject_duplicate_keys = true;
  checks.max_array_values = kMaxArrayValues;
  checks.max_nested_object_keys = kMaxEntryKeys;
  checks.unlimited_member = kMetadataKey;
  config_util::JsonFailure why;
  Header result;
  Status rejected = Status::kSuccess;
  const config_util::MemberSink sink = [&](const std::string& key, Json&& value) {
    if (key == kMetadataKey) {
      if (value.is_null()) {
        return true;
      }
      if (!value.is_object()) {
        rejected = parse_fail(what, "__metadata__: is not a JSON object");
        return false;
      }
      for (const auto& m : value.items()) {
        if (!m.value().is_string()) {
          rejected = parse_fail(what, "__metadata__: value of " + in_quotes(m.key()) + " is not a string");
          return false;
        }
        result.metadata[m.key()] = m.value().get<std::string>();
      }
      return true;
    }
    Entry entry;
    rejected = parse_entry(what, key, value, buffer_bytes, &entry);
    if (!ok(rejected)) {
      return false;
    }
    result.entries.push_back(std::move(entry));
    return true;
  };
  bool is_object = false;
  if (!config_util::parse_json_members(text, text + length, checks, sink, &is_object, &why)) {
    switch (why.kind) {
    case config_util::JsonFailure::Kind::kRejected:
      return rejected;
    case config_util::JsonFailure::Kind::kDepth:
      return parse_fail(what, "header nests deeper than " + std::to_string(kMaxDepth) +
                                  " levels (a valid header nests 3 deep)");
    case config_util::JsonFailure::Kind::kDuplicate:
      return parse_fail(what, "header: duplicate key " + in_quotes(why.detail));
    case config_util::JsonFailure::Kind::kObjectKeys:
      return parse_fail(what, "tensor " + in_quotes(why.detail) + ": an object holds more than " +
                                  std::to_string(kMaxEntryKeys) +
                                  " keys (an entry has dtype, shape and data_offsets)");
    case config_util::JsonFailure::Kind::kArrayLength:
      return parse_fail(what, "header: an array holds more than " + why.detail +
                                  " values (shapes have at most " + std::to_string(kMaxRank) +
                                  " dimensions, data_offsets 2)");
    case config_util::JsonFailure::Kind::kSyntax:
      break;
    }
    return parse_fail(what, "header is not valid JSON: " + why.detail);
  }
  if (!is_object) {
    return parse_fail(what, "header is not a JSON object");
  }
  // Entries in name order, as the header's keys sort (they arrive in text order).
  std::sort(result.entries.begin(), result.entries.end(),
            [](const Entry& a, const Entry& b) { return a.name < b.name; });

  // The tensors must tile the data buffer exactly: sorted by offsets, each begins where the previous
  // one ended, the first at 0 and the last at the end of the buffer.
  std::vector<std::size_t>& order = result.file_order;
  order.resize(result.entries.size());
  for (std::size_t i = 0; i < order.size(); ++i) {
    order[i] = i;
  }
  const std::vector<Entry>& entries = result.entries;
  std::stable_sort(order.begin(), order.end(), [&entries](std::size_t a, std::size_t b) {
    return entries[a].begin != entries[b].begin ? entries[a].begin < entries[b].begin
                                                : entries[a].end < entries[b].end;
  });
  std::uint64_t position = 0;
  const Entry* previous = nullptr;
  for (const std::size_t i : order) {
    const Entry& e = entries[i];
    if (e.begin < position) {
      return parse_fail(what,
                        "tensors " + in_quotes(previous->name) + " and " + in_quotes(e.name) + " overlap");
    }
    if (e.begin > position) {
      return parse_fail(what, "bytes [" + std::to_string(position) + ", " + std::to_string(e.begin) +
                                  ") of the data buffer belong to no tensor (a hole before tensor " +
                                  in_quotes(e.name) + ")");
    }
    position = e.end;
    previous = &e;
  }
  if (position != buffer_bytes) {
    return parse_fail(what, std::to_string(buffer_bytes - position) +
                                " trailing bytes after the last tensor's data (data buffer of " +
                                std::to_string(buffer_bytes) + " bytes, tensors end at " +
                                std::to_string(position) + ")");
  }
  *out = std::move(result);
  return Status::kSuccess;
}

/// Checks the 8-byte length prefix against the total size; stores the header length.
Status check_length(const std::string& what, std::uint64_t header_length, std::uint64_t total,
                    std::uint64_t* out) {
  if (header_length > kMaxHeaderBytes) {
    return parse_fail(what, "header length " + std::to_string(header_length) + " exceeds the limit of " +
                                std::to_string(kMaxHeaderBytes) + " bytes");
  }
  if (header_length > total - kLengthBytes) {
    return parse_fail(what, "header length " + std::to_string(header_length) + " exceeds the " +
                                std::to_string(total - kLengthBytes) +
                                " bytes after the length prefix (truncated file?)");
  }
  *out = header_length;
  return Status::kSuccess;
}

Status too_short(const std::string& what, std::uint64_t total) {
  return parse_fail(what,
                    "is " + std::to_string(total) + " bytes long, shorter than the 8-byte length prefix");
}

SafetensorsFile assemble(Header&& header, std::vector<std::vector<std::uint8_t>>&& data) {
  SafetensorsFile file;
  file.metadata = std::move(header.metadata);
  file.tensors.resize(header.entries.size());
  for (std::size_t i = 0; i < header.entries.size(); ++i) {
    SafetensorsTensor& t = file.tensors[i];
    t.name = std::move(header.entries[i].name);
    t.dtype = header.entries[i].dtype;
    t.shape = header.entries[i].shape;
    t.data = std::move(data[i]);
  }
  return file;
}

Status parse_image(const void* bytes, std::size_t size, SafetensorsFile* out, const std::string& what) {
  const auto* p = static_cast<const std::uint8_t*>(bytes);
  if (size < kLengthBytes) {
    return too_short(what, size);
  }
  std::uint64_t header_length = 0;
  if (Status s = check_length(what, load_u64_le(p), size, &header_length); !ok(s)) {
    return s;
  }
  const std::uint64_t data_start = kLengthBytes + header_length;
  Header header;
  if (Status s = parse_header(what, reinterpret_cast<const char*>(p + kLengthBytes),
                              static_cast<std::size_t>(header_length), size - data_start, &header);
      !ok(s)) {
    return s;
  }
  std::vector<std::vector<std::uint8_t>> data(header.entries.size());
  for (std::size_t i = 0; i < header.entries.size(); ++i) {
    const Entry& e = header.entries[i];
    data[i].assign(p + data_start + e.begin, p + data_start + e.end);
  }
  *out = assemble(std::move(header), std::move(data));
  return Status::kSuccess;
}

/// Closes the file on scope exit.
struct FileCloser {
  std::FILE* f = nullptr;
  ~FileCloser() {
    if (f != nullptr) {
      std::fclose(f);
    }
  }
};

Status read_exactly(std::FILE* f, void* dst, std::size_t bytes, const std::string& what) {
  if (bytes > 0 && std::fread(dst, 1, bytes, f) != bytes) {
    const bool error = std::ferror(f) != 0;
    return fail(Status::kErrorIO, what,
                error ? std::string("read error: ") + std::strerror(errno)
                      : std::string("unexpected end of file (the file changed while it was read?)"));
  }
  return Status::kSuccess;
}

Status read_file(const std::string& path, SafetensorsFile* out) {
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) {
    return fail(Status::kErrorIO, path, "cannot open: " + ec.message());
  }
  FileCloser file;
  file.f = std::fopen(path.c_str(), "rb");
  if (file.f == nullptr) {
    return fail(Status::kErrorIO, path, std::string("cannot open: ") + std::strerror(errno));
  }
  if (size < kLengthBytes) {
    return too_short(path, size);
  }
  std::uint8_t prefix[kLengthBytes];
  if (Status s = read_exactly(file.f, prefix, kLengthBytes, path); !ok(s)) {
    return s;
  }
  std::uint64_t header_length = 0;
  if (Status s = check_length(path, load_u64_le(prefix), size, &header_length); !ok(s)) {
    return s;
  }
  std::string text(static_cast<std::size_t>(header_length), '\0');
  if (Status s = read_exactly(file.f, text.data(), text.size(), path); !ok(s)) {
    return s;
  }
  Header header;
  if (Status s = parse_header(path, text.data(), text.size(), size - kLengthBytes - header_length, &header);
      !ok(s)) {
    return s;
  }
  // The tensors tile the data buffer, so reading them in file order reads it front to back.
  std::vector<std::vector<std::uint8_t>> data(header.entries.size());
  for (const std::size_t i : header.file_order) {
    const Entry& e = header.entries[i];
    data[i].resize(static_cast<std::size_t>(e.end - e.begin));
    if (Status s = read_exactly(file.f, data[i].data(), data[i].size(), path); !ok(s)) {
      return s;
    }
  }
  *out = assemble(std::move(header), std::move(data));
  return Status::kSuccess;
}

/// A validated file ready to be written: the 8-byte prefix plus the padded header, and the tensors in
/// name order (their data follows the header in that order).
struct WritePlan {
  std::string prefix_and_header;
  std::vector<const SafetensorsTensor*> order;
  std::uint64_t data_bytes = 0;
};

Status plan_layout(const SafetensorsFile& file, const std::string& what, WritePlan* out) {
  WritePlan layout;
  layout.order.reserve(file.tensors.size());
  for (const SafetensorsTensor& t : file.tensors) {
    layout.order.push_back(&t);
  }
  std::sort(layout.order.begin(), layout.order.end(),
            [](const SafetensorsTensor* a, const SafetensorsTensor* b) { return a->name < b->name; });

  Json header = Json::object();
  if (!file.metadata.empty()) {
    Json metadata = Json::object();
    for (const auto& [key, value] : file.metadata) {
      metadata[key] = value;
    }
    header[kMetadataKey] = std::move(metadata);
  }
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < layout.order.size(); ++i) {
    const SafetensorsTensor& t = *layout.order[i];
    const std::string where = "tensor " + in_quotes(t.name) + ": ";
    if (t.name == kMetadataKey) {
      return fail(Status::kErrorInvalidValue, what, where + "the name is reserved for the metadata");
    }
    if (i > 0 && layout.order[i - 1]->name == t.name) {
      return fail(Status::kErrorInvalidValue, what, where + "duplicate tensor name");
    }
    if (!is_valid(t.dtype)) {
      return fail(Status::kErrorInvalidDType, what,
                  where + "dtype: " + std::to_string(static_cast<int>(t.dtype)) + " is not a dtype");
    }
    for (int d = 0; d < t.shape.rank(); ++d) {
      if (t.shape.dims()[d] < 0) {
        return fail(Status::kErrorInvalidShape, what,
                    where + "shape: dimension " + std::to_string(d) + " is negative");
      }
    }
    std::int64_t bytes = 0;
    if (t.shape.numel() < 0 || !::culayers::detail::checked_mul(
                                   t.shape.numel(), static_cast<std::int64_t>(dtype_size(t.dtype)), &bytes)) {
      return fail(Status::kErrorSizeLimit, what, where + "shape: the byte size overflows int64");
    }
    if (t.data.size() != static_cast<std::uint64_t>(bytes)) {
      return fail(Status::kErrorInvalidValue, what,
                  where + "data: holds " + std::to_string(t.data.size()) +
                      " bytes, the shape and dtype need " + std::to_string(bytes));
    }
    Json shape = Json::array();
    for (int d = 0; d < t.shape.rank(); ++d) {
      shape.push_back(t.shape.dims()[d]);
    }
    Json entry = Json::object();
    entry["dtype"] = safetensors_dtype_name(t.dtype);
    entry["shape"] = std::move(shape);
    entry["data_offsets"] = Json::array({offset, offset + static_cast<std::uint64_t>(bytes)});
    header[t.name] = std::move(entry);
    offset += static_cast<std::uint64_t>(bytes);
  }
  std::string text;
  try {
    text = header.dump(); // objects are std::maps: keys come out sorted
  } catch (const Json::type_error&) {
    return fail(Status::kErrorInvalidValue, what, "a tensor name or a metadata string is not valid UTF-8");
  }
  // Spaces (JSON whitespace) after the object put the data at an 8-byte aligned file offset.
  text.append((kLengthBytes - text.size() % kLengthBytes) % kLengthBytes, ' ');
  layout.prefix_and_header.assign(kLengthBytes, '\0');
  store_u64_le(text.size(), reinterpret_cast<std::uint8_t*>(layout.prefix_and_header.data()));
  layout.prefix_and_header += text;
  layout.data_bytes = offset;
  *out = std::move(layout);
  return Status::kSuccess;
}

Status write_file(const std::string& path, const SafetensorsFile& file) {
  WritePlan layout;
  if (Status s = plan_layout(file, path, &layout); !ok(s)) {
    return s;
  }
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return fail(Status::kErrorIO, path, "cannot create " + tmp + ": " + std::strerror(errno));
  }
  // The first failure's errno (later calls may overwrite it).
  int error = 0;
  auto check = [&error](bool success) {
    if (!success && error == 0) {
      error = errno != 0 ? errno : EIO;
    }
  };
  errno = 0;
  check(std::fwrite(layout.prefix_and_header.data(), 1, layout.prefix_and_header.size(), f) ==
        layout.prefix_and_header.size());
  for (const SafetensorsTensor* t : layout.order) {
    if (error == 0 && !t->data.empty()) {
      check(std::fwrite(t->data.data(), 1, t->data.size(), f) == t->data.size());
    }
  }
  check(std::fflush(f) == 0);
  check(std::fclose(f) == 0);
  if (error != 0) {
    std::remove(tmp.c_str());
    return fail(Status::kErrorIO, path, "cannot write " + tmp + ": " + std::strerror(error));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    return fail(Status::kErrorIO, path, "cannot rename " + tmp + " to it: " + std::strerror(e));
  }
  return Status::kSuccess;
}

/// Runs `body`, turning the exceptions the standard library or nlohmann-json may throw into statuses
/// (the API never throws).
template <class Body>
Status guarded(const std::string& what, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(Status::kErrorOutOfMemory, what, "out of host memory");
  } catch (const std::exception& e) {
    return fail(Status::kErrorInternal, what, e.what());
  } catch (...) {
    return fail(Status::kErrorInternal, what, "unknown exception");
  }
}

} // namespace

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  for (const SafetensorsTensor& t : tensors) {
    if (t.name == name) {
      return &t;
    }
  }
  return nullptr;
}

const char* safetensors_dtype_name(DType dtype) noexcept {
  switch (dtype) {
  case DType::kFloat32:
    return "F32";
  case DType::kFloat16:
    return "F16";
  case DType::kBFloat16:
    return "BF16";
  case DType::kInt32:
    return "I32";
  case DType::kUInt8:
    return "U8";
  case DType::kInt64:
    return "I64";
  }
  return "";
}

Status safetensors_dtype_from_name(const std::string& name, DType* out) {
  if (out == nullptr) {
    return ::culayers::detail::set_error(Status::kErrorNullPointer, "safetensors: dtype: out: is null");
  }
  for (const DType d :
       {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kInt32, DType::kUInt8, DType::kInt64}) {
    if (name == safetensors_dtype_name(d)) {
      *out = d;
      return Status::kSuccess;
    }
  }
  return ::culayers::detail::set_error(Status::kErrorParse, "safetensors: dtype: unsupported dtype \"%s\"",
                                       name.c_str());
}

Status parse_safetensors(const void* bytes, std::size_t size, SafetensorsFile* out, const char* what) {
  const char* source = what != nullptr ? what : "buffer";
  if (out == nullptr) {
    return ::culayers::detail::set_error(Status::kErrorNullPointer, "safetensors: %s: out: is null", source);
  }
  if (bytes == nullptr && size > 0) {
    return ::culayers::detail::set_error(Status::kErrorNullPointer, "safetensors: %s: bytes: is null",
                                         source);
  }
  return guarded(source, [&] { return parse_image(bytes, size, out, source); });
}

Status read_safetensors(const std::string& path, SafetensorsFile* out) {
  if (out == nullptr) {
    return ::culayers::detail::set_error(Status::kErrorNullPointer, "safetensors: %s: out: is null",
                                         path.c_str());
  }
  return guarded(path, [&] { return read_file(path, out); });
}

Status serialize_safetensors(const SafetensorsFile& file, std::vector<std::uint8_t>* out) {
  if (out == nullptr) {
    return ::culayers::detail::set_error(Status::kErrorNullPointer, "safetensors: buffer: out: is null");
  }
  return guarded("buffer", [&] {
    WritePlan layout;
    if (Status s = plan_layout(file, "buffer", &layout); !ok(s)) {
      return s;
    }
    std::vector<std::uint8_t> image;
    image.reserve(layout.prefix_and_header.size() + static_cast<std::size_t>(layout.data_bytes));
    image.insert(image.end(), layout.prefix_and_header.begin(), layout.prefix_and_header.end());
    for (const SafetensorsTensor* t : layout.order) {
      image.insert(image.end(), t->data.begin(), t->data.end());
    }
    *out = std::move(image);
    return Status::kSuccess;
  });
}

Status write_safetensors(const std::string& path, const SafetensorsFile& file) {
  return guarded(path, [&] { return write_file(path, file); });
}

} // namespace nn
CULAYERS_NAMESPACE_END
