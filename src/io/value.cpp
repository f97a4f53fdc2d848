#include "posekd/io/value.h"

#include <sstream>

#include "posekd/core/error.h"

namespace posekd::io {

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::Bool;
  v.b_ = b;
  return v;
}
Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::Int;
  v.i_ = i;
  return v;
}
Value Value::floating(double d) {
  Value v;
  v.kind_ = Kind::Float;
  v.d_ = d;
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::String;
  v.s_ = std::make_shared<std::string>(std::move(s));
  return v;
}
Value Value::bytes(std::string b) {
  Value v;
  v.kind_ = Kind::Bytes;
  v.s_ = std::make_shared<std::string>(std::move(b));
  return v;
}
Value Value::tensor(torch::Tensor t) {
  Value v;
  v.kind_ = Kind::Tensor;
  v.t_ = std::move(t);
  return v;
}
Value Value::list(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::List;
  v.seq_ = std::make_shared<std::vector<Value>>(std::move(items));
  return v;
}
Value Value::tuple(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::Tuple;
  v.seq_ = std::make_shared<std::vector<Value>>(std::move(items));
  return v;
}
Value Value::dict(std::string class_name) {
  Value v;
  v.kind_ = Kind::Dict;
  v.dict_ = std::make_shared<DictData>();
  v.dict_->class_name = std::move(class_name);
  return v;
}
Value Value::object(std::string module, std::string name) {
  Value v;
  v.kind_ = Kind::Object;
  v.obj_ = std::make_shared<ObjectData>();
  v.obj_->module = std::move(module);
  v.obj_->name = std::move(name);
  return v;
}

const char* Value::kind_name() const {
  switch (kind_) {
    case Kind::None:
      return "None";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::String:
      return "str";
    case Kind::Bytes:
      return "bytes";
    case Kind::Tensor:
      return "tensor";
    case Kind::List:
      return "list";
    case Kind::Tuple:
      return "tuple";
    case Kind::Dict:
      return "dict";
    case Kind::Object:
      return "object";
  }
  return "?";
}

std::string Value::type_name() const {
  if (kind_ == Kind::Object) return obj_->qualified();
  if (kind_ == Kind::Dict) return dict_->class_name;
  return kind_name();
}

namespace {
[[noreturn]] void wrong(const std::string& what, const char* expected, const Value& v) {
  throw Error(what + ": expected " + expected + ", got " + v.type_name());
}
}  // namespace

bool Value::as_bool(const std::string& what) const {
  if (kind_ != Kind::Bool) wrong(what, "bool", *this);
  return b_;
}
int64_t Value::as_int(const std::string& what) const {
  if (kind_ == Kind::Bool) return b_ ? 1 : 0;
  if (kind_ != Kind::Int) wrong(what, "int", *this);
  return i_;
}
double Value::as_double(const std::string& what) const {
  if (kind_ == Kind::Int) return static_cast<double>(i_);
  if (kind_ != Kind::Float) wrong(what, "float", *this);
  return d_;
}
const std::string& Value::as_string(const std::string& what) const {
  if (kind_ != Kind::String) wrong(what, "str", *this);
  return *s_;
}
const std::string& Value::as_bytes(const std::string& what) const {
  if (kind_ != Kind::Bytes) wrong(what, "bytes", *this);
  return *s_;
}
const torch::Tensor& Value::as_tensor(const std::string& what) const {
  if (kind_ != Kind::Tensor) wrong(what, "tensor", *this);
  return t_;
}
std::vector<Value>& Value::items(const std::string& what) const {
  if (kind_ != Kind::List && kind_ != Kind::Tuple) wrong(what, "list or tuple", *this);
  return *seq_;
}
DictData& Value::dict_data(const std::string& what) const {
  if (kind_ != Kind::Dict) wrong(what, "dict", *this);
  return *dict_;
}
ObjectData& Value::object_data(const std::string& what) const {
  if (kind_ != Kind::Object) wrong(what, "object", *this);
  return *obj_;
}

size_t Value::size() const {
  if (kind_ == Kind::List || kind_ == Kind::Tuple) return seq_->size();
  if (kind_ == Kind::Dict) return dict_->items.size();
  return 0;
}

const Value* Value::find(const std::string& key) const {
  if (kind_ != Kind::Dict) return nullptr;
  auto it = dict_->str_index.find(key);
  return it == dict_->str_index.end() ? nullptr : &dict_->items[it->second].second;
}
const Value* Value::find(int64_t key) const {
  if (kind_ != Kind::Dict) return nullptr;
  auto it = dict_->int_index.find(key);
  return it == dict_->int_index.end() ? nullptr : &dict_->items[it->second].second;
}
bool Value::contains(const std::string& key) const { return find(key) != nullptr; }
bool Value::contains(int64_t key) const { return find(key) != nullptr; }

const Value& Value::at(const std::string& key, const std::string& what) const {
  dict_data(what);
  const Value* v = find(key);
  if (!v) throw Error(what + ": missing key '" + key + "'");
  return *v;
}
const Value& Value::at(int64_t key, const std::string& what) const {
  dict_data(what);
  const Value* v = find(key);
  if (!v) throw Error(what + ": missing key " + std::to_string(key));
  return *v;
}

void Value::set(const Value& key, const Value& value) {
  DictData& d = dict_data("dict assignment");
  if (key.kind_ == Kind::String) {
    auto it = d.str_index.find(*key.s_);
    if (it != d.str_index.end()) {
      d.items[it->second].second = value;
      return;
    }
    d.str_index.emplace(*key.s_, d.items.size());
  } else if (key.kind_ == Kind::Int || key.kind_ == Kind::Bool) {
    int64_t k = key.as_int();
    auto it = d.int_index.find(k);
    if (it != d.int_index.end()) {
      d.items[it->second].second = value;
      return;
    }
    d.int_index.emplace(k, d.items.size());
  }
  // Other key kinds (tuples, floats, ...) are kept in order but not indexed.
  d.items.emplace_back(key, value);
}

const Value* Value::attr(const std::string& name) const {
  if (kind_ != Kind::Dict || !dict_->attrs) return nullptr;
  auto it = dict_->attrs->str_index.find(name);
  return it == dict_->attrs->str_index.end() ? nullptr : &dict_->attrs->items[it->second].second;
}

void Value::append(const Value& v) {
  if (kind_ != Kind::List) wrong("list append", "list", *this);
  seq_->push_back(v);
}

std::string dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32:
      return "float32";
    case torch::kFloat64:
      return "float64";
    case torch::kFloat16:
      return "float16";
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kInt64:
      return "int64";
    case torch::kInt32:
      return "int32";
    case torch::kInt16:
      return "int16";
    case torch::kInt8:
      return "int8";
    case torch::kUInt8:
      return "uint8";
    case torch::kBool:
      return "bool";
    default:
      return c10::toString(t);
  }
}

std::string Value::describe() const {
  std::ostringstream os;
  switch (kind_) {
    case Kind::None:
      return "None";
    case Kind::Bool:
      return b_ ? "bool True" : "bool False";
    case Kind::Int:
      return "int " + std::to_string(i_);
    case Kind::Float:
      os << "float " << d_;
      return os.str();
    case Kind::String: {
      std::string s = *s_;
      if (s.size() > 60) s = s.substr(0, 57) + "...";
      return "str '" + s + "'";
    }
    case Kind::Bytes:
      return "bytes (" + std::to_string(s_->size()) + " bytes)";
    case Kind::Tensor: {
      if (!t_.defined()) return "tensor (undefined)";
      os << "tensor " << dtype_name(t_.scalar_type()) << " [";
      for (int64_t i = 0; i < t_.dim(); ++i) os << (i ? ", " : "") << t_.size(i);
      os << "]";
      return os.str();
    }
    case Kind::List:
      return "list (" + std::to_string(seq_->size()) + " items)";
    case Kind::Tuple:
      return "tuple (" + std::to_string(seq_->size()) + " items)";
    case Kind::Dict:
      return dict_->class_name + " (" + std::to_string(dict_->items.size()) + " items)";
    case Kind::Object:
      return "<" + obj_->qualified() + (obj_->is_class ? " class>" : ">");
  }
  return "?";
}

}  // namespace posekd::io
