//===- Import.h - MInference configs to pattern files -----------*- C++ -*-===//
//
// The importer of attn-import (and of fuzz/ImportFuzzer.cpp): an MInference
// config's text to the text of a Tessera pattern file, with every problem
// an error naming the layer and the head. attn-import reads the file, then
// parses, verifies and prints what importConfig wrote.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TOOLS_ATTN_IMPORT_IMPORT_H
#define TESSERA_TOOLS_ATTN_IMPORT_IMPORT_H

#include "tessera/Support/JsonFile.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/JSON.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tessera::minference {

namespace json = llvm::json;

/// attn-import's options (its command line).
struct ImportOptions {
  /// Query heads per layer (0: as many as layer 0 lists) and key/value
  /// heads (0: as many as the query heads).
  int64_t heads = 0, kvHeads = 0, headDim = 128;
  std::string dtype = "bf16", model = "minference";
  /// vertical_and_slash's scoring queries and forced entries; block_sparse's
  /// blocks kept.
  int64_t lastQ = 64, firstColumns = 30, lastDiagonals = 100, blockTopK = 100;
};

/// The largest config, and the most layers and heads of all layers together
/// it may list (published configs list up to 80 layers of 64 heads in
/// under 1 MiB).
constexpr uint64_t kMaxConfigBytes = uint64_t(16) << 20;
constexpr size_t kMaxLayers = 4096;
constexpr size_t kMaxEntries = size_t(1) << 18;

/// Counts the objects and arrays in JSON `text` (brackets outside strings),
/// so that a config of a million layers is refused before it is parsed (the
/// parser allocates kilobytes per object).
inline void countContainers(llvm::StringRef text, size_t &objects,
                            size_t &arrays) {
  objects = arrays = 0;
  forEachOutsideStrings(text, [&](char c) {
    objects += c == '{';
    arrays += c == '[';
    return true;
  });
}

struct HeadEntry {
  std::string type;
  int64_t vertical = 0, slash = 0;
};

/// The first head that one layer object lists twice, however its keys are
/// spelled ("0" and "\u0030" are one key; JSON parsers keep one of them
/// silently): "layer L lists head 'K' twice", or "". `text` is a JSON list
/// of objects (already parsed, so every string in it is well formed).
inline std::string duplicateKey(llvm::StringRef text) {
  int depth = 0;
  int64_t layer = -1;
  std::vector<std::string> keys;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '"') {
      size_t begin = i;
      for (++i; i < text.size() && text[i] != '"'; ++i)
        if (text[i] == '\\')
          ++i;
      // A key of a layer object: a string at depth 2 followed by ':'.
      size_t j = i + 1;
      while (j < text.size() && isspace(static_cast<unsigned char>(text[j])))
        ++j;
      if (depth != 2 || j >= text.size() || text[j] != ':')
        continue;
      // The key as the parser reads it: its escapes decoded.
      llvm::Expected<json::Value> decoded =
          json::parse(text.slice(begin, i + 1));
      std::string key;
      if (decoded && decoded->getAsString())
        key = decoded->getAsString()->str();
      else
        llvm::consumeError(decoded.takeError());
      if (std::find(keys.begin(), keys.end(), key) != keys.end())
        return "layer " + std::to_string(layer) + " lists head '" + key +
               "' twice";
      keys.push_back(key);
      continue;
    }
    if (c == '[' || c == '{') {
      if (++depth == 2 && c == '{') {
        ++layer;
        keys.clear();
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return "";
}

/// Whether `name` can follow '@' in MLIR as a bare symbol name: a letter or
/// '_', then letters, digits, '_', '$' or '.' (MLIR's bare-id).
inline bool isSymbolName(llvm::StringRef name) {
  if (name.empty() ||
      !(isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_'))
    return false;
  return llvm::all_of(name, [](char c) {
    return isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' ||
           c == '.';
  });
}

/// The pattern of one MInference head; "" with `error` set if invalid.
inline std::string patternOf(const HeadEntry &e, const ImportOptions &o,
                             std::string &error) {
  if (e.type == "vertical_and_slash") {
    if (e.vertical + e.slash == 0) {
      error = "vertical_and_slash with vertical_size and slash_size 0 keeps "
              "nothing";
      return "";
    }
    return "#attn.intersect<#attn.causal, #attn.vertical_slash<last_q = " +
           std::to_string(o.lastQ) +
           ", vertical = " + std::to_string(e.vertical) +
           ", slash = " + std::to_string(e.slash) +
           ", first_columns = " + std::to_string(o.firstColumns) +
           ", last_diagonals = " + std::to_string(o.lastDiagonals) + ">>";
  }
  if (e.type == "stream_llm") {
    // StreamingLLM: n_init = vertical_size sinks, n_local = slash_size
    // recent keys (the query's own included).
    if (e.slash < 1) {
      error = "stream_llm needs slash_size (its local window) >= 1";
      return "";
    }
    // No sinks: the local window alone.
    if (e.vertical == 0)
      return "#attn.window<before = " + std::to_string(e.slash - 1) + ">";
    return "#attn.a_shape<sink = " + std::to_string(e.vertical) +
           ", before = " + std::to_string(e.slash - 1) + ">";
  }
  if (e.type == "block_sparse")
    // MInference's block-sparse kernel keeps a fixed top-k of 64-key blocks
    // (its sizes are unused).
    return "#attn.intersect<#attn.causal, #attn.block_topk<block = 64, "
           "top_k = " +
           std::to_string(o.blockTopK) + ">>";
  error = "unknown type '" + e.type +
          "' (MInference's are vertical_and_slash, stream_llm and "
          "block_sparse)";
  return "";
}

/// "" if the options are usable, else what is wrong with them.
inline std::string checkOptions(const ImportOptions &o) {
  if (o.dtype != "f16" && o.dtype != "bf16" && o.dtype != "f32")
    return "--dtype must be f16, bf16 or f32, got " + o.dtype;
  if (o.lastQ < 1 || o.firstColumns < 0 || o.lastDiagonals < 0 ||
      o.blockTopK < 1)
    return "--last-q and --block-topk must be >= 1, --first-columns and "
           "--last-diagonals >= 0";
  if (!isSymbolName(o.model))
    return "--model must be a symbol name (a letter or '_', then letters, "
           "digits, '_', '$' or '.'), got '" +
           o.model + "'";
  return "";
}

/// Writes the pattern file of the MInference config `config` to `text`
/// (heads with one pattern share one attn.heads op); false with `error`
/// set if the config is refused. The counts are bounded before the JSON is
/// parsed, and its nesting by parseJsonBounded.
inline bool importConfig(llvm::StringRef config, const ImportOptions &o,
                         std::string &text, std::string &error) {
  auto fail = [&](const llvm::Twine &message) {
    error = message.str();
    return false;
  };
  std::string patternError;
  // A config holds one object per layer and one array per head (and the
  // list): the counts are bounded before parsing.
  size_t objects, arrays;
  countContainers(config, objects, arrays);
  if (objects > kMaxLayers)
    return fail("the config holds " + std::to_string(objects) +
                " objects (one per layer), more than " +
                std::to_string(kMaxLayers));
  if (arrays > kMaxEntries + 1)
    return fail("the config holds " + std::to_string(arrays) +
                " lists (one per head), more than " +
                std::to_string(kMaxEntries + 1));
  std::optional<json::Value> root = parseJsonBounded(config, error);
  if (!root)
    return fail(error);
  const json::Array *layers = root->getAsArray();
  if (!layers)
    return fail("an MInference config is a JSON list with one object per "
                "layer");
  if (layers->empty())
    return fail("the config lists no layer");
  if (layers->size() > kMaxLayers)
    return fail("the config lists " + std::to_string(layers->size()) +
                " layers, more than " + std::to_string(kMaxLayers));
  size_t entries = 0;
  for (size_t li = 0; li < layers->size(); ++li) {
    const json::Object *heads = (*layers)[li].getAsObject();
    if (!heads)
      return fail("layer " + std::to_string(li) +
                  " is not an object mapping head indices to "
                  "[type, vertical_size, slash_size, score]");
    entries += heads->size();
  }
  if (entries > kMaxEntries)
    return fail("the config lists " + std::to_string(entries) +
                " heads in all layers together, more than " +
                std::to_string(kMaxEntries));
  std::string duplicate = duplicateKey(config);
  if (!duplicate.empty())
    return fail(duplicate);

  // layer -> head -> entry
  std::vector<std::map<int64_t, HeadEntry>> model;
  for (size_t li = 0; li < layers->size(); ++li) {
    std::string where = "layer " + std::to_string(li);
    const json::Object *heads = (*layers)[li].getAsObject();
    std::map<int64_t, HeadEntry> entries;
    for (const auto &kv : *heads) {
      llvm::StringRef key = kv.first;
      int64_t head;
      // One spelling per head: "7", never "07" or "+7".
      if (key.getAsInteger(10, head) || head < 0 || head > 4095 ||
          key != std::to_string(head))
        return fail(where + ": key '" + key +
                    "' is not a head index in [0, 4096) written in decimal "
                    "without sign or leading zeros");
      std::string at = where + ", head " + std::to_string(head);
      const json::Array *v = kv.second.getAsArray();
      if (!v || v->size() != 4)
        return fail(at + ": expected [type, vertical_size, slash_size, "
                         "score]");
      std::optional<llvm::StringRef> type = (*v)[0].getAsString();
      std::optional<int64_t> vertical = (*v)[1].getAsInteger();
      std::optional<int64_t> slash = (*v)[2].getAsInteger();
      if (!type)
        return fail(at + ": the type must be a string");
      if (!vertical || !slash)
        return fail(at + ": vertical_size and slash_size must be integers");
      if (*vertical < 0 || *slash < 0 || *vertical > (int64_t(1) << 40) ||
          *slash > (int64_t(1) << 40))
        return fail(at + ": sizes must be in [0, 2^40], got " +
                    std::to_string(*vertical) + " and " +
                    std::to_string(*slash));
      if (!(*v)[3].getAsNumber())
        return fail(at + ": the score must be a number");
      entries[head] = HeadEntry{type->str(), *vertical, *slash};
    }
    model.push_back(std::move(entries));
  }

  int64_t heads = o.heads ? o.heads : int64_t(model[0].size());
  if (heads < 1 || heads > 4096)
    return fail("--heads must be in [1, 4096], got " + std::to_string(heads));
  int64_t kvHeads = o.kvHeads ? o.kvHeads : heads;
  std::string source = o.heads ? "--heads" : "layer 0";
  for (size_t li = 0; li < model.size(); ++li) {
    std::string where = "layer " + std::to_string(li);
    if (model[li].empty())
      return fail(where + " lists no head");
    if (model[li].rbegin()->first >= heads)
      return fail(where + " has head " +
                  std::to_string(model[li].rbegin()->first) +
                  ", but the model has " + std::to_string(heads) + " heads (" +
                  source + ")");
    for (int64_t h = 0; h < heads; ++h)
      if (!model[li].count(h))
        return fail(where + " lacks head " + std::to_string(h) + " of " +
                    std::to_string(heads) + " (" + source + ")");
  }

  // The pattern file: heads with the same pattern share one attn.heads op.
  text = "attn.model @" + o.model + " {\n";
  for (size_t li = 0; li < model.size(); ++li) {
    text += "  attn.layer " + std::to_string(li) +
            " heads = " + std::to_string(heads) +
            " kv_heads = " + std::to_string(kvHeads) +
            " head_dim = " + std::to_string(o.headDim) + " dtype = " + o.dtype +
            " {\n";
    std::map<std::string, std::vector<int64_t>> groups;
    std::vector<std::string> order;
    for (auto &[head, entry] : model[li]) {
      std::string pattern = patternOf(entry, o, patternError);
      if (pattern.empty())
        return fail("layer " + std::to_string(li) + ", head " +
                    std::to_string(head) + ": " + patternError);
      if (groups[pattern].empty())
        order.push_back(pattern);
      groups[pattern].push_back(head);
    }
    for (const std::string &pattern : order) {
      text += "    attn.heads [";
      for (size_t i = 0; i < groups[pattern].size(); ++i)
        text += (i ? ", " : "") + std::to_string(groups[pattern][i]);
      text += "] = " + pattern + "\n";
    }
    text += "  }\n";
  }
  text += "}\n";

  return true;
}

} // namespace tessera::minference

#endif // TESSERA_TOOLS_ATTN_IMPORT_IMPORT_H
