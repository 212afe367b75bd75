# CUDA language setup for culayers: default architectures, the CUDA runtime choice and the device
# compile options every project target that contains CUDA code gets.
include_guard(GLOBAL)
include(CheckLanguage)

# sm_80, sm_86, sm_89 and sm_90 as real code, plus compute_90 PTX so newer GPUs can JIT the kernels.
set(CULAYERS_DEFAULT_CUDA_ARCHITECTURES "80-real;86-real;89-real;90")

# Enables the CUDA language when CULAYERS_ENABLE_CUDA is ON and a CUDA compiler is found; sets
# CULAYERS_HAS_CUDA accordingly. A macro because enable_language() must run in the top-level scope.
#
# Architecture precedence: -DCMAKE_CUDA_ARCHITECTURES (or a preset) > the CULAYERS_CUDA_ARCHITECTURES
# environment variable (CI sets 90) > CMake's own CUDAARCHS environment variable > the default above.
macro(culayers_enable_cuda)
  set(CULAYERS_HAS_CUDA OFF)
  if(CULAYERS_ENABLE_CUDA)
    # nvcc is often not on PATH (/usr/local/cuda/bin): point CMake at the usual places before it looks.
    if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
      find_program(_culayers_nvcc nvcc
                   HINTS ENV CUDA_PATH ENV CUDA_HOME "${CUDAToolkit_ROOT}" PATH_SUFFIXES bin
                   PATHS /usr/local/cuda/bin)
      if(_culayers_nvcc)
        set(ENV{CUDACXX} "${_culayers_nvcc}")
      endif()
    endif()
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
      if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
        if(DEFINED ENV{CULAYERS_CUDA_ARCHITECTURES} AND NOT "$ENV{CULAYERS_CUDA_ARCHITECTURES}" STREQUAL "")
          set(CMAKE_CUDA_ARCHITECTURES "$ENV{CULAYERS_CUDA_ARCHITECTURES}" CACHE STRING
              "CUDA architectures (from the CULAYERS_CUDA_ARCHITECTURES environment variable)")
        elseif(NOT DEFINED ENV{CUDAARCHS})
          set(CMAKE_CUDA_ARCHITECTURES "${CULAYERS_DEFAULT_CUDA_ARCHITECTURES}" CACHE STRING
              "CUDA architectures (culayers default: 80/86/89/90 real + 90 PTX)")
        endif()
      endif()
      if(CULAYERS_CUDART STREQUAL "shared")
        set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
      else()
        set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
      endif()
      enable_language(CUDA)
      set(CMAKE_CUDA_STANDARD 17)
      set(CMAKE_CUDA_STANDARD_REQUIRED ON)
      set(CMAKE_CUDA_EXTENSIONS OFF)
      set(CULAYERS_HAS_CUDA ON)
      message(STATUS "culayers: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, "
                     "architectures ${CMAKE_CUDA_ARCHITECTURES})")
    else()
      message(STATUS "culayers: no CUDA compiler found; the CUDA backend (culayers::culayers) is not built")
    endif()
  else()
    message(STATUS "culayers: CUDA backend OFF (CULAYERS_ENABLE_CUDA=OFF)")
  endif()
endmacro()

# Device compile options for a target holding CUDA sources (no effect on its C/C++ sources).
#   --expt-relaxed-constexpr   constexpr host functions (std::numeric_limits & co.) usable in kernels
#   -Xptxas -warn-spills,...   spills and local memory are reported, and --Werror=all-warnings (see
#                              CulayersWarnings.cmake) turns those ptxas warnings into errors
#   -lineinfo                  source lines for profilers and compute-sanitizer, outside Release
#                              (and in Release too with CULAYERS_CUDA_LINEINFO=ON; it does not change code)
#   --compress-mode=size       with CULAYERS_CUDA_COMPRESS=ON (the gpu preset): device code compressed in
#                              the fat binary (-Xfatbin=-compress-all before nvcc 12.8). Line tables triple
#                              the device code; compressed, a binary's device code is about 7x smaller
#                              (measured on the group-norm backward object, sm_90 with -lineinfo: 4.0 MB ->
#                              0.6 MB), which keeps what scripts/gpu_build.sh ships under its size budget.
#                              The "size" mode (zstd) needs a driver from CUDA 12.8 on (r570+) to load.
function(culayers_target_cuda_options target)
  if(NOT CULAYERS_HAS_CUDA)
    return()
  endif()
  set(lineinfo "$<$<NOT:$<CONFIG:Release,MinSizeRel>>:-lineinfo>")
  if(CULAYERS_CUDA_LINEINFO)
    set(lineinfo "-lineinfo")
  endif()
  set(compress "")
  if(CULAYERS_CUDA_COMPRESS)
    if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.8)
      set(compress "--compress-mode=size")
    else()
      set(compress "-Xfatbin=-compress-all")
    endif()
  endif()
  target_compile_options(${target} PRIVATE
    "$<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr;-Xptxas=-warn-spills,-warn-lmem-usage;${lineinfo};${compress}>")
endfunction()
