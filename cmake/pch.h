// Precompiled header shared by every posekd target. Only heavy, stable third-party headers.
#pragma once
#include <torch/torch.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
