# skipgram workload tests: one GoogleTest binary with the MPI test main, run
# under mpiexec with 1 and 2 ranks. Included OPTIONALLY by
# tests/workloads/CMakeLists.txt.
add_executable(skipgram_tests
  ${CMAKE_CURRENT_SOURCE_DIR}/test_skipgram.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/../mpi/mpi_test_main.cpp
)
target_include_directories(skipgram_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/../mpi)
target_link_libraries(skipgram_tests PRIVATE embtrain_core GTest::gtest embtrain_warnings)

# tests/CMakeLists.txt works out the flags this mpiexec takes (Open MPI's
# --oversubscribe, and --allow-run-as-root as root); without it, Open MPI's.
if(DEFINED EMBTRAIN_MPIEXEC_FLAGS)
  set(SKIPGRAM_MPIEXEC_FLAGS ${EMBTRAIN_MPIEXEC_FLAGS})
else()
  set(SKIPGRAM_MPIEXEC_FLAGS --allow-run-as-root --oversubscribe)
endif()
foreach(np 1 2)
  add_test(NAME skipgram.np${np}
    COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${SKIPGRAM_MPIEXEC_FLAGS}
            ${MPIEXEC_PREFLAGS} $<TARGET_FILE:skipgram_tests> ${MPIEXEC_POSTFLAGS})
  set_tests_properties(skipgram.np${np} PROPERTIES PROCESSORS ${np} TIMEOUT 300
                       ENVIRONMENT "OMP_NUM_THREADS=1;EMBTRAIN_TEST_TIMEOUT=120")
endforeach()

# Through the CLI: `embtrain train` with the [skipgram] keys, export from
# the checkpoint, and the keys' error messages.
if(DEFINED EMBTRAIN_SYSTEM_PYTHON)
  set(SKIPGRAM_PYTHON ${EMBTRAIN_SYSTEM_PYTHON})
else()
  find_program(SKIPGRAM_PYTHON python3 PATHS /usr/bin NO_DEFAULT_PATH REQUIRED)
endif()
add_test(NAME skipgram.cli
  COMMAND ${SKIPGRAM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/skipgram_cli_test.py
          --embtrain $<TARGET_FILE:embtrain>)
set_tests_properties(skipgram.cli PROPERTIES PROCESSORS 2 TIMEOUT 300
                     ENVIRONMENT "OMP_NUM_THREADS=1")
