//===- Npy.h - write numpy .npy files (float32) -----------------*- C++ -*-===//
//
// For test and benchmark tools that hand arrays to numpy: version 1.0
// headers, little-endian float32, C order.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_SUPPORT_NPY_H
#define TESSERA_SUPPORT_NPY_H

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace tessera {

/// Writes `data` (shape `shape`) to `path`; false if the file cannot be
/// written.
inline bool writeNpy(const std::string &path, const std::vector<float> &data,
                     const std::vector<int64_t> &shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int64_t s : shape)
    dict += std::to_string(s) + ", ";
  dict += "), }";
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = uint16_t(dict.size());
  out.put(char(len & 0xff));
  out.put(char(len >> 8));
  out << dict;
  out.write(reinterpret_cast<const char *>(data.data()),
            std::streamsize(data.size() * sizeof(float)));
  return bool(out);
}

} // namespace tessera

#endif // TESSERA_SUPPORT_NPY_H
