//===- DynamicKernels.h - the kernels of a dynamic group, by name -*- C++ -*-===//
//
// The kernels of a dynamic head group in launch-plan order (dynLaunch in
// DynamicArgs.h indexes this list): the emitter writes them into the
// manifest and the bundle, the runtime's manifest reader requires exactly
// them. Host-only.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_DYNAMICKERNELS_H
#define TESSERA_KERNEL_DYNAMICKERNELS_H

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::kernel {

/// family: "vertical_slash", "block_topk", "routing" or "block_index" (the
/// caller's lists: the attention kernel only); dtype "f16" or
/// "bf16"; merge: routing with the rest of the pattern merged (rt_rest);
/// flex: block top-k with tau > 0 (FlexPrefill's choice: bt_flex_rows and
/// bt_flex_mode after the scores).
inline std::vector<std::string>
dynamicKernelNames(const std::string &family, const std::string &dtype,
                   int64_t headDim, bool merge, bool flex = false) {
  std::string typed = "_" + dtype,
              sized = typed + "_d" + std::to_string(headDim);
  if (family == "block_index")
    return {"tessera_bi_attend" + sized};
  if (family == "vertical_slash")
    return {"tessera_vs_scores" + sized, "tessera_vs_softmax",
            "tessera_vs_sums", "tessera_vs_select",
            "tessera_vs_attend" + sized};
  if (family == "block_topk" && flex)
    return {"tessera_bt_pool" + typed,      "tessera_bt_scores",
            "tessera_bt_flex_rows" + typed, "tessera_bt_flex_mode",
            "tessera_bt_take",              "tessera_bt_select",
            "tessera_bt_attend" + sized};
  if (family == "block_topk")
    return {"tessera_bt_pool" + typed, "tessera_bt_scores", "tessera_bt_take",
            "tessera_bt_select", "tessera_bt_attend" + sized};
  std::vector<std::string> names = {
      "tessera_rt_seed" + typed,          "tessera_rt_assign_keys" + typed,
      "tessera_rt_update" + typed,        "tessera_rt_assign_queries" + typed,
      "tessera_rt_sort",                  "tessera_rt_attend" + sized};
  if (merge)
    names.push_back("tessera_rt_rest" + sized);
  return names;
}

} // namespace tessera::kernel

#endif // TESSERA_KERNEL_DYNAMICKERNELS_H
