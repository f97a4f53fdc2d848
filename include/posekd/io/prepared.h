// Forwarding header: the prepared-pickle reader is data::load_prepared_annotations in
// posekd/data/prepared.h (io sits below data in the module order). Only train/trainer.cpp still
// includes this file; delete it (and its exemption in tests/core/test_module_order.cpp) once that
// includes posekd/data/prepared.h and calls data::load_prepared_annotations.
#pragma once
#include "posekd/data/prepared.h"

namespace posekd::io {
using data::load_prepared_annotations;
}  // namespace posekd::io
