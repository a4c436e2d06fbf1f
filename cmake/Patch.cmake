# Writes OUTPUT: INPUT with the text FROM replaced by TO, failing when INPUT
# does not hold FROM (so a broken test variant can never silently equal the
# original).
# "@NL@" in FROM and TO stands for a line break.
string(REPLACE "@NL@" "\n" FROM "${FROM}")
string(REPLACE "@NL@" "\n" TO "${TO}")
file(READ "${INPUT}" text)
string(FIND "${text}" "${FROM}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "Patch.cmake: '${FROM}' is not in ${INPUT}")
endif()
string(REPLACE "${FROM}" "${TO}" text "${text}")
file(WRITE "${OUTPUT}" "${text}")
