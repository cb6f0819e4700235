# The skipgram workload: its library sources (train layer, no Boost) and
# its config keys (app layer). Included OPTIONALLY by the top-level
# CMakeLists.txt.
target_sources(embtrain_train PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/src/train/workloads/skipgram.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/src/train/workloads/skipgram_text.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/src/train/workloads/skipgram_sampling.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/src/train/workloads/skipgram_kernel.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/src/train/workloads/skipgram_vectors.cpp
)
target_sources(embtrain_app PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src/app/options_skipgram.cpp)
