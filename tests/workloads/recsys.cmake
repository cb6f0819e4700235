# recsys_tests: the recsys workload's tests, one GoogleTest binary with the
# MPI test main, run under mpiexec with 1 and 2 ranks.
add_executable(recsys_tests
  ${CMAKE_CURRENT_SOURCE_DIR}/test_recsys.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/../mpi/mpi_test_main.cpp
)
target_include_directories(recsys_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/../mpi)
target_link_libraries(recsys_tests PRIVATE embtrain_core GTest::gtest embtrain_warnings)
target_compile_definitions(recsys_tests PRIVATE
  EMBTRAIN_RECSYS_SAMPLE="${PROJECT_SOURCE_DIR}/configs/data/recsys_sample.tsv")

# tests/CMakeLists.txt sets the Open MPI flags for the MPI tests; this file
# works on its own too.
set(EMBTRAIN_RECSYS_MPIEXEC_FLAGS ${EMBTRAIN_MPIEXEC_FLAGS})
if(NOT DEFINED EMBTRAIN_MPIEXEC_FLAGS)
  execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE EMBTRAIN_RECSYS_MPIEXEC_VERSION
                  ERROR_VARIABLE EMBTRAIN_RECSYS_MPIEXEC_VERSION)
  if(EMBTRAIN_RECSYS_MPIEXEC_VERSION MATCHES "Open MPI|OpenRTE")
    list(APPEND EMBTRAIN_RECSYS_MPIEXEC_FLAGS --oversubscribe --allow-run-as-root)
  endif()
endif()

foreach(np 1 2)
  add_test(NAME workloads.recsys_np${np}
    COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${EMBTRAIN_RECSYS_MPIEXEC_FLAGS}
            ${MPIEXEC_PREFLAGS} $<TARGET_FILE:recsys_tests> ${MPIEXEC_POSTFLAGS})
  set_tests_properties(workloads.recsys_np${np} PROPERTIES PROCESSORS ${np} TIMEOUT 300
                       ENVIRONMENT "OMP_NUM_THREADS=1;EMBTRAIN_TEST_TIMEOUT=120")
endforeach()
