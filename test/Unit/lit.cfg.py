# -*- Python -*-
# GoogleTest unit tests, each TEST counted by lit as one test.

import os

import lit.formats

config.name = "Tessera-Unit"
config.suffixes = []
config.test_exec_root = os.path.join(config.tessera_obj_root, "test", "Unit")
config.test_source_root = config.test_exec_root
config.test_format = lit.formats.GoogleTest(".", "Tests")
