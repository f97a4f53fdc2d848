// Python pickle reading (protocols 0-5 binary opcodes: everything protocols 2-5 emit for builtins,
// globals, REDUCE/BUILD/NEWOBJ, persistent ids, memo, FRAME) and writing (protocol 2, restricted to
// the opcodes torch.load(weights_only=True) of torch 1.13 accepts, plus BINFLOAT/BINBYTES).
// No code is ever executed: a whitelist of globals is interpreted (OrderedDict, torch tensor
// rebuilders, storage classes, _codecs.encode, set/frozenset, torch.Size); anything else becomes an
// ObjectData placeholder. Every read is bounds-checked; errors are posekd::Error
// "PATH: what at offset N" with N the absolute offset in the file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "posekd/io/value.h"

namespace posekd::io {

// Called for BINPERSID/PERSID with the persistent id; returns the object (a storage = 1-D tensor).
// `offset` is the absolute file offset of the opcode, for error messages.
using PersistentLoad = std::function<Value(const Value& pid, size_t offset)>;

struct PickleSource {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t base_offset = 0;  // offset of data[0] in the file (errors report base_offset + pos)
  std::string path;        // for errors
};

// Runs the pickle machine from data[0] to STOP. Returns the object; *end (if given) receives the
// position just past STOP (relative to data). Without persistent_load, persistent ids are an error.
Value unpickle(const PickleSource& src, const PersistentLoad& persistent_load = nullptr, size_t* end = nullptr);

// The whole file; posekd::Error "PATH: cannot open ..." on failure.
std::string read_file_bytes(const std::string& path);

// A plain pickle file (e.g. prepared_train_annotation.pkl).
Value load_pickle_file(const std::string& path);

// Tensors are handed to `store`, which returns the storage key to reference ('storage',
// torch.<T>Storage, key, 'cpu', numel). `store` receives a contiguous CPU tensor.
using TensorStore = std::function<std::string(const torch::Tensor& contiguous)>;
// Pickles `v` (protocol 2). Dicts are written as plain dicts (never OrderedDict).
std::string pickle_value(const Value& v, const TensorStore& store);

// Python storage class name for a dtype ("FloatStorage"); throws for unsupported dtypes.
std::string storage_class_for(torch::ScalarType t);
// dtype for a storage class name; returns false when unknown.
bool dtype_for_storage_class(const std::string& name, torch::ScalarType* out);

}  // namespace posekd::io
