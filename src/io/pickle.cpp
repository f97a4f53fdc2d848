#include "posekd/io/pickle.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "posekd/core/error.h"

namespace posekd::io {

namespace {

struct StorageClass {
  const char* name;
  torch::ScalarType dtype;
};
const StorageClass kStorageClasses[] = {
    {"FloatStorage", torch::kFloat32},     {"DoubleStorage", torch::kFloat64}, {"HalfStorage", torch::kFloat16},
    {"BFloat16Storage", torch::kBFloat16}, {"LongStorage", torch::kInt64},     {"IntStorage", torch::kInt32},
    {"ShortStorage", torch::kInt16},       {"CharStorage", torch::kInt8},      {"ByteStorage", torch::kUInt8},
    {"BoolStorage", torch::kBool},
};

}  // namespace

std::string storage_class_for(torch::ScalarType t) {
  for (const auto& s : kStorageClasses)
    if (s.dtype == t) return s.name;
  throw Error("cannot save tensors of dtype " + dtype_name(t));
}

bool dtype_for_storage_class(const std::string& name, torch::ScalarType* out) {
  for (const auto& s : kStorageClasses)
    if (name == s.name) {
      *out = s.dtype;
      return true;
    }
  return false;
}

namespace {

// ------------------------------------------------------------------------------------------------
// Reader

class Unpickler {
 public:
  Unpickler(const PickleSource& src, const PersistentLoad& pl) : src_(src), pl_(pl) {}
  // Containers reference each other through shared pointers; a hostile pickle can make them refer
  // to themselves (a list appended to itself via the memo), which would never be freed. Every
  // container the run created is remembered (push), and at the end each one that the caller does
  // not get back is emptied: all of them after a failure; after success, those not reachable from
  // the (checked acyclic) result. A cycle can hide in containers already popped or overwritten in
  // the memo, so the memo and the stack alone are not enough (LeakSanitizer, make asan).
  ~Unpickler() {
    std::unordered_set<const void*> keep;
    if (ok_) {
      std::vector<const Value*> todo{&result_};
      while (!todo.empty()) {
        const Value* v = todo.back();
        todo.pop_back();
        const void* id = container_id(*v);
        if (!id || !keep.insert(id).second) continue;
        for_each_child(*v, [&](const Value& c) { todo.push_back(&c); });
      }
    }
    for (auto& v : created_)
      if (!keep.count(container_id(v))) break_container(v);
  }

  Value run(size_t* end) {
    while (true) {
      op_pos_ = pos_;
      uint8_t op = u8();
      switch (op) {
        case 0x80: {  // PROTO
          uint8_t p = u8();
          if (p > 5) fail("unsupported pickle protocol " + std::to_string(p));
          break;
        }
        case 0x95:
          u64();
          break;     // FRAME (length only; we read the stream linearly)
        case '.': {  // STOP
          Value v = pop();
          if (end) *end = pos_;
          std::unordered_set<const void*> on_path, done;
          if (has_cycle(v, on_path, done, 0)) {
            break_container(v);
            fail("self-referencing object (a container that contains itself)");
          }
          ok_ = true;
          result_ = v;
          return v;
        }
        case '(':
          marks_.push_back(stack_.size());
          break;  // MARK
        case '0':
          pop();
          break;  // POP
        case '1':
          pop_mark();
          break;  // POP_MARK
        case '2':
          push(top());
          break;  // DUP
        case 'N':
          push(Value());
          break;
        case 0x88:
          push(Value::boolean(true));
          break;
        case 0x89:
          push(Value::boolean(false));
          break;
        case 'J':
          push(Value::integer(static_cast<int32_t>(u32())));
          break;  // BININT
        case 'K':
          push(Value::integer(u8()));
          break;  // BININT1
        case 'M':
          push(Value::integer(u16()));
          break;  // BININT2
        case 0x8a:
          push(long_bytes(u8()));
          break;      // LONG1
        case 0x8b: {  // LONG4
          int32_t n = static_cast<int32_t>(u32());
          if (n < 0) fail("negative LONG4 length");
          push(long_bytes(static_cast<size_t>(n)));
          break;
        }
        case 'I':
          push(text_int(line()));
          break;     // INT (protocol 0; "I01" = True)
        case 'L': {  // LONG (protocol 0)
          std::string s = line();
          if (!s.empty() && s.back() == 'L') s.pop_back();
          push(text_int(s));
          break;
        }
        case 'F': {  // FLOAT (text)
          std::string s = line();
          char* e = nullptr;
          double d = std::strtod(s.c_str(), &e);
          if (e == s.c_str()) fail("bad FLOAT '" + s + "'");
          push(Value::floating(d));
          break;
        }
        case 'G': {  // BINFLOAT, big endian
          uint64_t b = 0;
          const uint8_t* p = take(8);
          for (int i = 0; i < 8; ++i) b = (b << 8) | p[i];
          double d;
          std::memcpy(&d, &b, 8);
          push(Value::floating(d));
          break;
        }
        case 'X':
          push(Value::string(str(u32())));
          break;  // BINUNICODE
        case 0x8c:
          push(Value::string(str(u8())));
          break;  // SHORT_BINUNICODE
        case 0x8d:
          push(Value::string(str(u64())));
          break;     // BINUNICODE8
        case 'T': {  // BINSTRING (py2 str)
          int32_t n = static_cast<int32_t>(u32());
          if (n < 0) fail("negative BINSTRING length");
          push(Value::string(str(static_cast<size_t>(n))));
          break;
        }
        case 'U':
          push(Value::string(str(u8())));
          break;  // SHORT_BINSTRING
        case 'B':
          push(Value::bytes(str(u32())));
          break;  // BINBYTES
        case 'C':
          push(Value::bytes(str(u8())));
          break;  // SHORT_BINBYTES
        case 0x8e:
          push(Value::bytes(str(u64())));
          break;  // BINBYTES8
        case 0x96:
          push(Value::bytes(str(u64())));
          break;  // BYTEARRAY8
        case 'V':
          push(Value::string(line()));
          break;  // UNICODE (raw-unicode-escape, ASCII subset)
        case 'S':
          push(Value::string(unquote(line())));
          break;  // STRING (protocol 0)
        case ']':
          push(Value::list());
          break;
        case ')':
          push(Value::tuple());
          break;
        case '}':
          push(Value::dict());
          break;
        case 0x8f:
          push(Value::list());
          break;  // EMPTY_SET (sets are kept as lists)
        case 'l':
          push(Value::list(pop_mark()));
          break;  // LIST
        case 't':
          push(Value::tuple(pop_mark()));
          break;  // TUPLE
        case 0x85: {
          Value a = pop();
          push(Value::tuple({a}));
          break;
        }
        case 0x86: {
          Value b = pop(), a = pop();
          push(Value::tuple({a, b}));
          break;
        }
        case 0x87: {
          Value c = pop(), b = pop(), a = pop();
          push(Value::tuple({a, b, c}));
          break;
        }
        case 0x91:
          push(Value::list(pop_mark()));
          break;     // FROZENSET
        case 'd': {  // DICT
          auto items = pop_mark();
          Value d = Value::dict();
          set_items(d, items);
          push(d);
          break;
        }
        case 'a': {  // APPEND
          Value v = pop();
          append_to(top(), {v});
          break;
        }
        case 'e': {  // APPENDS
          auto items = pop_mark();
          append_to(top(), items);
          break;
        }
        case 0x90: {  // ADDITEMS (set)
          auto items = pop_mark();
          append_to(top(), items);
          break;
        }
        case 's': {  // SETITEM
          Value v = pop(), k = pop();
          set_items(top(), {k, v});
          break;
        }
        case 'u': {  // SETITEMS
          auto items = pop_mark();
          set_items(top(), items);
          break;
        }
        case 'c': {  // GLOBAL
          std::string module = line();
          std::string name = line();
          push(global(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Value name = pop(), module = pop();
          if (!name.is_string() || !module.is_string()) fail("STACK_GLOBAL needs two strings");
          push(global(module.as_string(), name.as_string()));
          break;
        }
        case 'R': {  // REDUCE
          Value args = pop(), fn = pop();
          push(call(fn, args));
          break;
        }
        case 0x81: {  // NEWOBJ
          Value args = pop(), cls = pop();
          push(call(cls, args));
          break;
        }
        case 0x92: {  // NEWOBJ_EX
          pop();      // kwargs
          Value args = pop(), cls = pop();
          push(call(cls, args));
          break;
        }
        case 'b': {  // BUILD
          Value state = pop();
          build(top(), state);
          break;
        }
        case 'p':
          memo_put(text_uint(line()));
          break;  // PUT
        case 'q':
          memo_put(u8());
          break;  // BINPUT
        case 'r':
          memo_put(u32());
          break;  // LONG_BINPUT
        case 0x94:
          memo_put(memo_.size());
          break;  // MEMOIZE
        case 'g':
          memo_get(text_uint(line()));
          break;  // GET
        case 'h':
          memo_get(u8());
          break;  // BINGET
        case 'j':
          memo_get(u32());
          break;     // LONG_BINGET
        case 'Q': {  // BINPERSID
          Value pid = pop();
          push(persistent(pid));
          break;
        }
        case 'P':
          push(persistent(Value::string(line())));
          break;  // PERSID
        case 0x98:
          break;  // READONLY_BUFFER: no-op
        case 0x97:
          fail("out-of-band buffers (NEXT_BUFFER) are not supported");
        default: {
          char buf[8];
          std::snprintf(buf, sizeof buf, "0x%02x", op);
          fail(std::string("unsupported or invalid pickle opcode ") + buf);
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    throw Error(src_.path + ": " + msg + " at offset " + std::to_string(src_.base_offset + op_pos_));
  }

  const uint8_t* take(size_t n) {
    if (n > src_.size - pos_) {
      op_pos_ = pos_;
      throw Error(src_.path + ": truncated pickle (need " + std::to_string(n) + " bytes) at offset " +
                  std::to_string(src_.base_offset + pos_));
    }
    const uint8_t* p = src_.data + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8() { return *take(1); }
  uint32_t u16() {
    const uint8_t* p = take(2);
    return p[0] | (p[1] << 8);
  }
  uint32_t u32() {
    const uint8_t* p = take(4);
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
  }
  uint64_t u64() {
    const uint8_t* p = take(8);
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
  }
  std::string str(uint64_t n) {
    if (n > src_.size - pos_) take(src_.size - pos_ + 1);  // reports truncation
    const uint8_t* p = take(static_cast<size_t>(n));
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }
  std::string line() {
    const void* nl = std::memchr(src_.data + pos_, '\n', src_.size - pos_);
    if (!nl) fail("unterminated text argument");
    size_t n = static_cast<const uint8_t*>(nl) - (src_.data + pos_);
    std::string s(reinterpret_cast<const char*>(src_.data + pos_), n);
    pos_ += n + 1;
    if (!s.empty() && s.back() == '\r') s.pop_back();
    return s;
  }
  std::string unquote(const std::string& s) {
    if (s.size() >= 2 && (s[0] == '\'' || s[0] == '"') && s.back() == s[0]) return s.substr(1, s.size() - 2);
    return s;
  }
  Value text_int(const std::string& s) {
    if (s == "00") return Value::boolean(false);
    if (s == "01") return Value::boolean(true);
    errno = 0;
    char* e = nullptr;
    long long v = std::strtoll(s.c_str(), &e, 10);
    if (s.empty() || *e != '\0' || errno == ERANGE) fail("bad or too large integer '" + s + "'");
    return Value::integer(v);
  }
  uint32_t text_uint(const std::string& s) {
    char* e = nullptr;
    unsigned long v = std::strtoul(s.c_str(), &e, 10);
    if (s.empty() || *e != '\0' || v > 0xffffffffUL) fail("bad memo index '" + s + "'");
    return static_cast<uint32_t>(v);
  }
  Value long_bytes(size_t n) {
    const uint8_t* p = take(n);
    if (n == 0) return Value::integer(0);
    // Little-endian two's complement; accept up to 8 significant bytes.
    bool neg = p[n - 1] & 0x80;
    for (size_t i = 8; i < n; ++i)
      if (p[i] != (neg ? 0xff : 0x00)) fail("integer does not fit in 64 bits");
    uint64_t v = neg ? ~uint64_t(0) : 0;
    for (size_t i = std::min<size_t>(n, 8); i-- > 0;) v = (v << 8) | p[i];
    if (n > 8 && ((v >> 63) != (neg ? 1u : 0u))) fail("integer does not fit in 64 bits");
    return Value::integer(static_cast<int64_t>(v));
  }

  void push(const Value& v) {
    if (stack_.size() > 10'000'000) fail("pickle stack too deep");
    if (const void* id = container_id(v); id && created_ids_.insert(id).second) created_.push_back(v);
    stack_.push_back(v);
  }
  Value pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("pickle stack underflow");
    Value v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Value& top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("pickle stack underflow");
    return stack_.back();
  }
  std::vector<Value> pop_mark() {
    if (marks_.empty()) fail("MARK missing");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value> items(std::make_move_iterator(stack_.begin() + m), std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }
  void memo_put(size_t idx) {
    if (stack_.empty()) fail("memo put on empty stack");
    memo_[idx] = stack_.back();
  }
  void memo_get(size_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail("memo index " + std::to_string(idx) + " is undefined");
    push(it->second);
  }

  void append_to(Value& target, const std::vector<Value>& items) {
    if (target.is_list()) {
      for (const auto& v : items) target.append(v);
    } else if (target.is_object()) {
      auto& o = target.object_data();
      o.list_items.insert(o.list_items.end(), items.begin(), items.end());
    } else {
      fail("APPEND to a " + target.type_name());
    }
  }
  void set_items(Value& target, const std::vector<Value>& items) {
    if (items.size() % 2) fail("odd number of items for a dict");
    if (target.is_dict()) {
      for (size_t i = 0; i < items.size(); i += 2) target.set(items[i], items[i + 1]);
    } else if (target.is_object()) {
      auto& o = target.object_data();
      for (size_t i = 0; i < items.size(); i += 2) o.dict_items.emplace_back(items[i], items[i + 1]);
    } else {
      fail("SETITEM on a " + target.type_name());
    }
  }
  void build(Value& target, const Value& state) {
    if (target.is_dict()) {
      // OrderedDict / dict subclass: instance __dict__ (e.g. _metadata).
      if (state.is_dict()) {
        auto& d = target.dict_data();
        Value attrs = Value::dict();
        if (d.attrs) attrs.dict_data() = *d.attrs;
        for (const auto& kv : state.dict_data().items) attrs.set(kv.first, kv.second);
        d.attrs = std::make_shared<DictData>(attrs.dict_data());
      }
      return;
    }
    if (target.is_object()) {
      target.object_data().state = std::make_shared<Value>(state);
      return;
    }
    if (target.is_tensor()) return;  // Parameter/Tensor state (requires_grad, hooks): ignored
    fail("BUILD on a " + target.type_name());
  }

  Value global(const std::string& module, const std::string& name) {
    Value v = Value::object(module, name);
    v.object_data().is_class = true;
    return v;
  }

  static std::vector<int64_t> int_list(const Value& v, const char* what, const Unpickler& self) {
    if (!v.is_sequence()) self.fail(std::string(what) + " must be a tuple, got " + v.type_name());
    std::vector<int64_t> out;
    for (const auto& x : v.items()) {
      if (!x.is_int()) self.fail(std::string(what) + " must hold ints, got " + x.type_name());
      out.push_back(x.as_int());
    }
    return out;
  }

  Value rebuild_tensor(const std::vector<Value>& a) {
    if (a.size() < 4) fail("_rebuild_tensor needs at least 4 arguments");
    if (!a[0].is_tensor()) fail("_rebuild_tensor: first argument is not a storage but " + a[0].type_name());
    const torch::Tensor& storage = a[0].as_tensor();
    if (!a[1].is_int()) fail("_rebuild_tensor: storage offset is not an int");
    int64_t offset = a[1].as_int();
    auto size = int_list(a[2], "tensor size", *this);
    auto stride = int_list(a[3], "tensor stride", *this);
    if (size.size() != stride.size()) fail("tensor size and stride have different lengths");
    int64_t numel = storage.numel();
    if (offset < 0) fail("negative storage offset");
    bool empty = false;
    int64_t last = offset;
    for (size_t i = 0; i < size.size(); ++i) {
      if (size[i] < 0 || stride[i] < 0) fail("negative tensor size or stride");
      if (size[i] == 0) empty = true;
    }
    if (!empty) {
      for (size_t i = 0; i < size.size(); ++i) {
        if (size[i] > 0 && stride[i] > 0 && (size[i] - 1) > (INT64_MAX / 4 - last) / stride[i])
          fail("tensor extent overflows");
        last += (size[i] - 1) * stride[i];
      }
      if (last >= numel)
        fail("tensor of size " + c10::str(c10::IntArrayRef(size)) + " at offset " + std::to_string(offset) +
             " exceeds its storage of " + std::to_string(numel) + " elements");
    }
    torch::Tensor t = empty ? torch::empty(size, storage.options()) : storage.as_strided(size, stride, offset);
    return Value::tensor(t);
  }

  Value call(const Value& fn, const Value& args) {
    if (!fn.is_object() || !fn.object_data().is_class) {
      // Calling something that is not a global reference: keep a placeholder.
      Value o = Value::object("<call>", fn.type_name());
      o.object_data().args = std::make_shared<Value>(args);
      return o;
    }
    const std::string q = fn.object_data().qualified();
    const std::vector<Value> empty;
    const std::vector<Value>& a = args.is_sequence() ? args.items() : empty;
    if (q == "collections.OrderedDict") {
      Value d = Value::dict("collections.OrderedDict");
      if (!a.empty() && a[0].is_sequence())
        for (const auto& kv : a[0].items())
          if (kv.is_sequence() && kv.size() == 2) d.set(kv.items()[0], kv.items()[1]);
      return d;
    }
    if (q == "torch._utils._rebuild_tensor_v2" || q == "torch._utils._rebuild_tensor") return rebuild_tensor(a);
    if (q == "torch._utils._rebuild_parameter" || q == "torch._utils._rebuild_parameter_with_state" ||
        q == "torch.nn.parameter.Parameter") {
      if (a.empty() || !a[0].is_tensor()) fail(q + ": first argument is not a tensor");
      return a[0];
    }
    if (q == "_codecs.encode") {  // protocol-2 bytes: encode(str, 'latin1')
      if (a.empty() || !a[0].is_string()) fail("_codecs.encode needs a string");
      const std::string& s = a[0].as_string();
      std::string out;
      for (size_t i = 0; i < s.size(); ++i) {  // UTF-8 code points < 256 -> one byte each
        unsigned char c = s[i];
        if (c < 0x80) {
          out.push_back(static_cast<char>(c));
        } else if ((c & 0xe0) == 0xc0 && i + 1 < s.size()) {
          out.push_back(static_cast<char>(((c & 0x1f) << 6) | (s[i + 1] & 0x3f)));
          ++i;
        } else {
          fail("_codecs.encode: character outside latin1");
        }
      }
      return Value::bytes(out);
    }
    if (q == "builtins.set" || q == "builtins.frozenset" || q == "__builtin__.set" || q == "builtins.list") {
      if (!a.empty() && a[0].is_sequence()) return Value::list(a[0].items());
      return Value::list();
    }
    if (q == "torch.Size" || q == "builtins.tuple") {
      if (!a.empty() && a[0].is_sequence()) return Value::tuple(a[0].items());
      return Value::tuple();
    }
    if (q == "builtins.bytearray" || q == "builtins.bytes") {
      if (a.empty()) return Value::bytes("");
      if (a[0].is_bytes()) return a[0];
    }
    Value o = Value::object(fn.object_data().module, fn.object_data().name);
    o.object_data().args = std::make_shared<Value>(args);
    return o;
  }

  Value persistent(const Value& pid) {
    if (!pl_) fail("persistent id in a plain pickle");
    return pl_(pid, src_.base_offset + op_pos_);
  }

  const PickleSource& src_;
  const PersistentLoad& pl_;
  size_t pos_ = 0, op_pos_ = 0;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  static const void* container_id(const Value& v) {
    if (v.is_sequence()) return &v.items();
    if (v.is_dict()) return &v.dict_data();
    if (v.is_object()) return &v.object_data();
    return nullptr;
  }
  template <class F>
  static void for_each_child(const Value& v, F&& f) {
    if (v.is_sequence()) {
      for (const auto& c : v.items()) f(c);
    } else if (v.is_dict()) {
      auto& d = v.dict_data();
      for (const auto& [k, c] : d.items) {
        f(k);
        f(c);
      }
      if (d.attrs)
        for (const auto& [k, c] : d.attrs->items) f(c);
    } else if (v.is_object()) {
      auto& o = v.object_data();
      if (o.args) f(*o.args);
      if (o.state) f(*o.state);
      for (const auto& c : o.list_items) f(c);
      for (const auto& [k, c] : o.dict_items) f(c);
    }
  }
  // True when a container reachable from v contains itself. Depth is limited: a hostile, absurdly
  // deep pickle is refused rather than allowed to overflow the stack.
  bool has_cycle(const Value& v, std::unordered_set<const void*>& on_path, std::unordered_set<const void*>& done,
                 int depth) {
    const void* id = container_id(v);
    if (!id || done.count(id)) return false;
    if (depth > 20000) fail("objects nested more than 20000 levels deep");
    if (!on_path.insert(id).second) return true;
    bool cyc = false;
    for_each_child(v, [&](const Value& c) { cyc = cyc || has_cycle(c, on_path, done, depth + 1); });
    on_path.erase(id);
    done.insert(id);
    return cyc;
  }
  static void break_container(const Value& v) {
    if (v.is_sequence()) {
      v.items().clear();
    } else if (v.is_dict()) {
      auto& d = v.dict_data();
      d.items.clear();
      d.str_index.clear();
      d.int_index.clear();
      d.attrs.reset();
    } else if (v.is_object()) {
      auto& o = v.object_data();
      o.args.reset();
      o.state.reset();
      o.list_items.clear();
      o.dict_items.clear();
    }
  }

  bool ok_ = false;
  Value result_;                // what run() returned (kept: the destructor must not empty it)
  std::vector<Value> created_;  // every container pushed, once
  std::unordered_set<const void*> created_ids_;
  std::unordered_map<size_t, Value> memo_;
};

// ------------------------------------------------------------------------------------------------
// Writer

class Pickler {
 public:
  explicit Pickler(const TensorStore& store) : store_(store) {}
  std::string run(const Value& v) {
    out_ += "\x80\x02";
    write(v, 0);
    out_ += '.';
    return std::move(out_);
  }

 private:
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_ += static_cast<char>((v >> (8 * i)) & 0xff);
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      out_ += 'K';
      out_ += static_cast<char>(v);
    } else if (v >= 0 && v < 65536) {
      out_ += 'M';
      out_ += static_cast<char>(v & 0xff);
      out_ += static_cast<char>(v >> 8);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      out_ += 'J';
      u32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      out_ += '\x8a';
      out_ += '\x08';
      uint64_t u = static_cast<uint64_t>(v);
      for (int i = 0; i < 8; ++i) out_ += static_cast<char>((u >> (8 * i)) & 0xff);
    }
  }
  void unicode(const std::string& s) {
    out_ += 'X';
    u32(static_cast<uint32_t>(s.size()));
    out_ += s;
  }
  void global(const char* module, const char* name) {
    out_ += 'c';
    out_ += module;
    out_ += '\n';
    out_ += name;
    out_ += '\n';
  }
  void tuple_of_ints(c10::IntArrayRef xs) {
    out_ += '(';
    for (int64_t x : xs) integer(x);
    out_ += 't';
  }
  void tensor(const torch::Tensor& t0) {
    if (!t0.defined()) throw Error("cannot save an undefined tensor");
    torch::Tensor t = t0.detach().to(torch::kCPU).contiguous();
    std::string cls = storage_class_for(t.scalar_type());
    std::string key = store_(t);
    global("torch._utils", "_rebuild_tensor_v2");
    out_ += '(';
    out_ += '(';  // persistent id
    unicode("storage");
    global("torch", cls.c_str());
    unicode(key);
    unicode("cpu");
    integer(t.numel());
    out_ += 't';
    out_ += 'Q';
    integer(0);
    tuple_of_ints(t.sizes());
    tuple_of_ints(t.strides());
    out_ += '\x89';  // requires_grad False
    out_ += '}';     // backward hooks: empty dict
    out_ += 't';
    out_ += 'R';
  }
  void write(const Value& v, int depth) {
    if (depth > 500) throw Error("cannot save: nesting deeper than 500 (a cycle?)");
    switch (v.kind()) {
      case Value::Kind::None:
        out_ += 'N';
        break;
      case Value::Kind::Bool:
        out_ += v.as_bool() ? '\x88' : '\x89';
        break;
      case Value::Kind::Int:
        integer(v.as_int());
        break;
      case Value::Kind::Float: {
        double d = v.as_double();
        uint64_t b;
        std::memcpy(&b, &d, 8);
        out_ += 'G';
        for (int i = 7; i >= 0; --i) out_ += static_cast<char>((b >> (8 * i)) & 0xff);
        break;
      }
      case Value::Kind::String:
        unicode(v.as_string());
        break;
      case Value::Kind::Bytes: {
        const std::string& b = v.as_bytes();
        out_ += 'B';
        u32(static_cast<uint32_t>(b.size()));
        out_ += b;
        break;
      }
      case Value::Kind::Tensor:
        tensor(v.as_tensor());
        break;
      case Value::Kind::List: {
        out_ += ']';
        const auto& items = v.items();
        for (size_t i = 0; i < items.size(); i += 1000) {
          out_ += '(';
          for (size_t j = i; j < std::min(items.size(), i + 1000); ++j) write(items[j], depth + 1);
          out_ += 'e';
        }
        break;
      }
      case Value::Kind::Tuple: {
        out_ += '(';
        for (const auto& x : v.items()) write(x, depth + 1);
        out_ += 't';
        break;
      }
      case Value::Kind::Dict: {
        out_ += '}';
        const auto& items = v.dict_data().items;
        for (size_t i = 0; i < items.size(); i += 1000) {
          out_ += '(';
          for (size_t j = i; j < std::min(items.size(), i + 1000); ++j) {
            write(items[j].first, depth + 1);
            write(items[j].second, depth + 1);
          }
          out_ += 'u';
        }
        break;
      }
      case Value::Kind::Object:
        throw Error("cannot save a placeholder of class " + v.object_data().qualified());
    }
  }

  const TensorStore& store_;
  std::string out_;
};

}  // namespace

Value unpickle(const PickleSource& src, const PersistentLoad& persistent_load, size_t* end) {
  Unpickler u(src, persistent_load);
  return u.run(end);
}

std::string pickle_value(const Value& v, const TensorStore& store) {
  Pickler p(store);
  return p.run(v);
}

std::string read_file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail_file(path, std::string("cannot open for reading: ") + std::strerror(errno));
  std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) fail_file(path, "read error");
  return data;
}

Value load_pickle_file(const std::string& path) {
  std::string data = read_file_bytes(path);
  if (data.empty()) fail_file(path, "empty file, not a pickle at offset 0");
  PickleSource src{reinterpret_cast<const uint8_t*>(data.data()), data.size(), 0, path};
  return unpickle(src);
}

}  // namespace posekd::io
