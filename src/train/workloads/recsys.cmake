# The recsys workload: its train-layer sources in embtrain_train, its config
# keys in the command line's code, embtrain_app (included from the
# top-level CMakeLists.txt).
target_sources(embtrain_train PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/src/train/workloads/recsys.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/src/train/workloads/recsys_data.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/src/train/workloads/recsys_model.cpp
)
target_sources(embtrain_app PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src/app/options_recsys.cpp)
