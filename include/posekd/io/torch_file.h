// Reading and writing files made by / for Python `torch.save` / `torch.load`.
//
// Reading accepts BOTH torch.save formats:
//   - zip (torch >= 1.6): `<archive>/data.pkl` + `<archive>/data/<key>` records (stored, not
//     compressed; zip64 supported); every record's zip CRC32 is verified;
//   - legacy (torch < 1.6, or _use_new_zipfile_serialization=False): magic-number pickle, protocol
//     version, sys-info, main pickle, storage-key list, raw storages each prefixed by an int64 count.
// Tensors come back as CPU tensors (views of one storage share it). Unknown classes are Object
// placeholders (e.g. an optimizer's `collections.Counter`). Corrupt or truncated input throws
// posekd::Error "PATH: what at offset N"; nothing is executed.
//
// Writing produces the zip format that Python torch.load (1.13, also weights_only=True as long as
// the content has no float scalars, which 1.13's restricted unpickler rejects) reads as plain dicts,
// lists, ints, floats, strings and tensors. Each tensor is written as its own contiguous storage.
// The file carries a `posekd_checksum` record (CRC32 over the content) that load verifies.
// Writing is atomic: PATH.tmp.<pid>, fsync, rename, fsync of the directory.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "posekd/io/value.h"

namespace posekd::io {

enum class FileFormat { Zip, Legacy, Pickle, Unknown };

// Looks at the first bytes only. Pickle = a plain pickle (starts with a PROTO opcode).
FileFormat detect_format(const std::string& path);

// A torch.save file in either format.
Value load_torch_file(const std::string& path);
// torch.save file (zip or legacy) or, failing that signature, a plain pickle.
Value load_any_file(const std::string& path);

void save_torch_file(const std::string& path, const Value& value);

// Ordered (name, tensor) pairs, e.g. a module's state_dict.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

// A plain dict of tensors.
Value to_value(const StateDict& sd);
// A dict (or OrderedDict) whose values are all tensors; `what` names it in errors.
StateDict to_state_dict(const Value& v, const std::string& what = "state dict");

// CRC-32 (zip polynomial), continuing from `crc`.
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

}  // namespace posekd::io
