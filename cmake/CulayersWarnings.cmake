# Warning flags for culayers' own code. Warnings are errors (CULAYERS_WERROR, ON by default) for host
# and device code alike; third-party headers (CUDA, Boost, GoogleTest) come in as SYSTEM includes and
# are not held to them.
include_guard(GLOBAL)

# culayers_target_warnings(<target>)
#   C/C++ (g++):  -Wall -Wextra [-Werror] -Wno-unknown-pragmas. The last one because the emulated backend
#                 compiles CUDA sources with g++, and `#pragma unroll` in kernel code is unknown there.
#   CUDA (nvcc):  --Werror=all-warnings (nvcc's own warnings and ptxas', i.e. spills and local memory),
#                 and the host flags above for the host side of .cu files.
function(culayers_target_warnings target)
  set(host_flags -Wall -Wextra -Wno-unknown-pragmas)
  if(CULAYERS_WERROR)
    list(APPEND host_flags -Werror)
  endif()
  target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:C,CXX>:${host_flags}>")
  if(CULAYERS_HAS_CUDA)
    list(JOIN host_flags "," host_csv)
    set(cuda_flags "-Xcompiler=${host_csv}")
    if(CULAYERS_WERROR)
      list(APPEND cuda_flags --Werror=all-warnings)
    endif()
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:${cuda_flags}>")
  endif()
endfunction()
