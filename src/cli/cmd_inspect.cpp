// `posekd inspect FILE`: lists the keys (nested, dotted), shapes and dtypes of a torch.save file
// (zip or legacy) or a plain pickle, plus scalars; unknown classes are shown by name.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "posekd/cli/registry.h"
#include "posekd/core/error.h"
#include "posekd/io/torch_file.h"
#include "posekd/io/value.h"

namespace posekd::cli::cmd_inspect {  // named: the commands share unity-build translation units
namespace {

using posekd::io::Value;

struct Printer {
  size_t max_items = 100;
  int max_depth = 64;

  void line(const std::string& key, const std::string& desc) {
    std::printf("%-60s %s\n", key.empty() ? "(root)" : key.c_str(), desc.c_str());
  }
  static std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }
  static std::string key_text(const Value& k) {
    if (k.is_string()) return k.as_string();
    if (k.is_int()) return std::to_string(k.as_int());
    return "<" + k.describe() + ">";
  }

  void print(const std::string& key, const Value& v, int depth) {
    line(key, v.describe());
    if (depth >= max_depth) {
      if (v.size()) line(join(key, "..."), "(nesting deeper than " + std::to_string(max_depth) + " not shown)");
      return;
    }
    if (v.is_dict()) {
      for (const auto& kv : v.dict_data().items) print(join(key, key_text(kv.first)), kv.second, depth + 1);
      if (v.attr("_metadata"))
        line(join(key, "_metadata"),
             "(OrderedDict attribute, " + std::to_string(v.attr("_metadata")->size()) + " items)");
    } else if (v.is_sequence()) {
      const auto& items = v.items();
      for (size_t i = 0; i < items.size() && i < max_items; ++i)
        print(join(key, std::to_string(i)), items[i], depth + 1);
      if (items.size() > max_items)
        line(join(key, "..."), "(" + std::to_string(items.size() - max_items) + " more items not shown)");
    } else if (v.is_object()) {
      const auto& o = v.object_data();
      if (o.args) print(join(key, "args"), *o.args, depth + 1);
      if (o.state) print(join(key, "state"), *o.state, depth + 1);
      for (size_t i = 0; i < o.list_items.size() && i < max_items; ++i)
        print(join(key, "items." + std::to_string(i)), o.list_items[i], depth + 1);
      for (const auto& kv : o.dict_items) print(join(key, "items." + key_text(kv.first)), kv.second, depth + 1);
    }
  }
};

posekd::cli::Registration reg(
    "inspect", "List keys, shapes and dtypes of a PyTorch file (zip or legacy torch.save) or pickle",
    [](CLI::App& app) -> posekd::cli::Runner {
      auto file = std::make_shared<std::string>();
      auto max_items = std::make_shared<size_t>(100);
      app.add_option("file", *file, "torch.save file (.pth/.pt, zip or legacy) or plain pickle")->required();
      app.add_option("--max-items", *max_items, "show at most this many items of each list/tuple");
      return [file, max_items]() {
        posekd::io::Value v = posekd::io::load_any_file(*file);
        const char* fmt = "pickle";
        switch (posekd::io::detect_format(*file)) {
          case posekd::io::FileFormat::Zip:
            fmt = "torch.save zip format";
            break;
          case posekd::io::FileFormat::Legacy:
            fmt = "torch.save legacy format";
            break;
          default:
            break;
        }
        std::printf("# %s (%s)\n", file->c_str(), fmt);
        Printer p;
        p.max_items = *max_items;
        p.print("", v, 0);
        return 0;
      };
    });

}  // namespace
}  // namespace posekd::cli::cmd_inspect
