//===- DynamicCost.h - dynamic pattern attributes for the cost model -*- C++ -*-===//

#ifndef TESSERA_TRANSFORMS_DYNAMICCOST_H
#define TESSERA_TRANSFORMS_DYNAMICCOST_H

#include "tessera/Cost/CostModel.h"
#include "tessera/Dialect/Attn/AttnAttributes.h"

#include <string>

namespace tessera {

/// A dynamic pattern as the cost model takes it (cost::DynamicHeadGroup,
/// heads left empty): the leaf's parameters and the pattern split as
/// (leaf and with) or (not leaf and without). False, with `why`, only for
/// more than one dynamic leaf.
bool dynamicCostGroup(attn::PatternAttrInterface pattern,
                      cost::DynamicHeadGroup &out, std::string &why);

/// The groups of `groups` (pattern, heads) split into static ones and
/// dynamic ones, for cost::predictLayer.
bool costGroups(
    const std::vector<std::pair<attn::PatternAttrInterface,
                                std::vector<int64_t>>> &groups,
    std::vector<schedule::HeadGroup> &statics,
    std::vector<cost::DynamicHeadGroup> &dynamics, std::string &why);

} // namespace tessera

#endif // TESSERA_TRANSFORMS_DYNAMICCOST_H
