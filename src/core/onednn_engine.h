// The CPU engine every posekd oneDNN primitive runs on (core's own kernels: bf16_conv.cpp,
// bf16_norm.cpp). Private to the core module.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>

namespace posekd {

dnnl::engine& dnnl_cpu_engine();

}  // namespace posekd
