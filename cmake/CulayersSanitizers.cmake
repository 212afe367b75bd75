# Sanitizer flags for the emulated backend (CULAYERS_SANITIZE = "" | address | thread).
#   address: ASan + UBSan, any report is fatal.
#   thread:  TSan. The emulator runtime itself is NOT instrumented (emulator/CMakeLists.txt builds it
#            with CULAYERS_EMU_TSAN=1 instead and drives TSan's fiber API); kernels, the library and the
#            tests are.
# nvcc cannot build sanitized device code, so CUDA targets are left alone (the presets that sanitize
# turn the CUDA backend off).
include_guard(GLOBAL)

set(CULAYERS_SANITIZE_COMPILE_FLAGS "")
set(CULAYERS_SANITIZE_LINK_FLAGS "")
if(CULAYERS_SANITIZE STREQUAL "address")
  set(CULAYERS_SANITIZE_COMPILE_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all
                                      -fno-omit-frame-pointer)
  set(CULAYERS_SANITIZE_LINK_FLAGS -fsanitize=address,undefined)
elseif(CULAYERS_SANITIZE STREQUAL "thread")
  set(CULAYERS_SANITIZE_COMPILE_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
  set(CULAYERS_SANITIZE_LINK_FLAGS -fsanitize=thread)
elseif(NOT CULAYERS_SANITIZE STREQUAL "")
  message(FATAL_ERROR "CULAYERS_SANITIZE must be empty, \"address\" or \"thread\" (got \"${CULAYERS_SANITIZE}\")")
endif()

# culayers_target_sanitizers(<target>): compile flags for the target's C/C++ sources; link flags on
# executables and shared libraries, and as a (build-tree only) usage requirement of static and object
# libraries so whatever links them gets the sanitizer runtime.
function(culayers_target_sanitizers target)
  if(CULAYERS_SANITIZE STREQUAL "")
    return()
  endif()
  target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:C,CXX>:${CULAYERS_SANITIZE_COMPILE_FLAGS}>")
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "STATIC_LIBRARY" OR type STREQUAL "OBJECT_LIBRARY")
    target_link_options(${target} INTERFACE "$<BUILD_INTERFACE:${CULAYERS_SANITIZE_LINK_FLAGS}>")
  else()
    target_link_options(${target} PRIVATE ${CULAYERS_SANITIZE_LINK_FLAGS})
  endif()
endfunction()
