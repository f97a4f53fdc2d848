#include "posekd/core/error.h"

namespace posekd {

void fail_file(const std::string& path, const std::string& message) { throw Error(path + ": " + message); }

}  // namespace posekd
