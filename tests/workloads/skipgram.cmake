# skipgram workload tests: one GoogleTest binary with the MPI test main, run
# under mpiexec with 1 and 2 ranks (embtrain_add_mpi_tests, from
# tests/CMakeLists.txt).
add_executable(skipgram_tests
  ${CMAKE_CURRENT_SOURCE_DIR}/test_skipgram.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/../mpi/mpi_test_main.cpp
)
target_include_directories(skipgram_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/../mpi)
target_link_libraries(skipgram_tests PRIVATE embtrain_train GTest::gtest embtrain_warnings)

embtrain_add_mpi_tests(skipgram.np skipgram_tests 1 2)

# Through the CLI: `embtrain train` with the [skipgram] keys, export from
# the checkpoint, and the keys' error messages.
add_test(NAME skipgram.cli
  COMMAND ${EMBTRAIN_SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/skipgram_cli_test.py
          --embtrain $<TARGET_FILE:embtrain>)
set_tests_properties(skipgram.cli PROPERTIES PROCESSORS 2 TIMEOUT 300
                     ENVIRONMENT "OMP_NUM_THREADS=1;${EMBTRAIN_TEST_MPI_ENV}")
