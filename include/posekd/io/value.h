// A small Python-object tree: what a pickle (or a torch.save file) holds, without executing code.
// Containers have reference semantics like Python (copies of a Value share the same list/dict),
// which the pickle memo needs. Dicts keep insertion order; OrderedDict attributes (`_metadata`)
// stay reachable through attrs(). Unknown classes become inspectable Object placeholders.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace posekd::io {

class Value;

struct DictData {
  std::string class_name = "dict";  // "dict", "collections.OrderedDict"
  std::vector<std::pair<Value, Value>> items;
  std::unordered_map<std::string, size_t> str_index;  // string key -> position in items
  std::unordered_map<int64_t, size_t> int_index;      // int key -> position in items
  std::shared_ptr<DictData> attrs;                    // instance __dict__ set by BUILD (may be null)
};

// A class we do not construct: module.name plus whatever the pickle gave it.
struct ObjectData {
  std::string module, name;
  std::shared_ptr<Value> args;                      // REDUCE/NEWOBJ arguments (a tuple), may be null
  std::shared_ptr<Value> state;                     // BUILD state, may be null
  std::vector<Value> list_items;                    // APPEND(S) on the object
  std::vector<std::pair<Value, Value>> dict_items;  // SETITEM(S) on the object
  bool is_class = false;                            // a bare global reference (not called)
  std::string qualified() const { return module + "." + name; }
};

class Value {
 public:
  enum class Kind { None, Bool, Int, Float, String, Bytes, Tensor, List, Tuple, Dict, Object };

  Value() = default;  // None
  static Value none() { return Value(); }
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value floating(double d);
  static Value string(std::string s);
  static Value bytes(std::string b);
  static Value tensor(torch::Tensor t);
  static Value list(std::vector<Value> items = {});
  static Value tuple(std::vector<Value> items = {});
  static Value dict(std::string class_name = "dict");
  static Value object(std::string module, std::string name);

  Kind kind() const { return kind_; }
  const char* kind_name() const;  // "None", "int", "dict", "collections.Counter" (objects), ...
  std::string type_name() const;

  bool is_none() const { return kind_ == Kind::None; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_int() const { return kind_ == Kind::Int; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_bytes() const { return kind_ == Kind::Bytes; }
  bool is_tensor() const { return kind_ == Kind::Tensor; }
  bool is_list() const { return kind_ == Kind::List; }
  bool is_tuple() const { return kind_ == Kind::Tuple; }
  bool is_sequence() const { return kind_ == Kind::List || kind_ == Kind::Tuple; }
  bool is_dict() const { return kind_ == Kind::Dict; }
  bool is_object() const { return kind_ == Kind::Object; }

  // Typed accessors. `what` names the value in the error ("FILE: state_dict.iter"); on a wrong
  // type they throw posekd::Error "WHAT: expected int, got collections.Counter".
  bool as_bool(const std::string& what = "value") const;
  int64_t as_int(const std::string& what = "value") const;
  double as_double(const std::string& what = "value") const;  // int or float
  const std::string& as_string(const std::string& what = "value") const;
  const std::string& as_bytes(const std::string& what = "value") const;
  const torch::Tensor& as_tensor(const std::string& what = "value") const;
  // List or tuple items.
  std::vector<Value>& items(const std::string& what = "value") const;
  DictData& dict_data(const std::string& what = "value") const;
  ObjectData& object_data(const std::string& what = "value") const;

  // Dict helpers (throw if not a dict).
  size_t size() const;  // items of a list/tuple/dict; 0 otherwise
  bool contains(const std::string& key) const;
  bool contains(int64_t key) const;
  const Value* find(const std::string& key) const;  // nullptr if absent (or not a dict)
  const Value* find(int64_t key) const;
  // Throw "WHAT: missing key 'k'" when absent.
  const Value& at(const std::string& key, const std::string& what = "value") const;
  const Value& at(int64_t key, const std::string& what = "value") const;
  void set(const Value& key, const Value& value);  // insert or replace, keeps first position
  void set(const std::string& key, const Value& value) { set(Value::string(key), value); }
  // OrderedDict attributes (e.g. `_metadata`); nullptr when none.
  const Value* attr(const std::string& name) const;

  void append(const Value& v);  // list only

  // Short human description: "tensor float32 [3, 4]", "int 5", "str 'abc'", "<collections.Counter>".
  std::string describe() const;

 private:
  Kind kind_ = Kind::None;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0.0;
  std::shared_ptr<std::string> s_;
  torch::Tensor t_;
  std::shared_ptr<std::vector<Value>> seq_;
  std::shared_ptr<DictData> dict_;
  std::shared_ptr<ObjectData> obj_;
};

// "float32", "int64", ... (Python's names).
std::string dtype_name(torch::ScalarType t);

}  // namespace posekd::io
