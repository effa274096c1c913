# Build time: the header-only library's code is compiled again in every translation unit that
# uses it (a file that includes tiercache.hpp spends about 35 of its 45 s at -O2 -g generating
# the library's functions, measured with -ftime-report), so our own programs are compiled as a
# few larger translation units instead of one per file (CMake's unity builds).
#
#   tiercache_unity_groups(TARGET NAME FILE... [NAME FILE...])
#
# adds the FILEs to TARGET, each NAME's files compiled as one translation unit (UNITY_BUILD_MODE
# GROUP): two groups build in parallel on two cores. Files of one group share a translation unit,
# so their file-local names (anonymous namespaces, statics) must not collide.
# -DTIERCACHE_UNITY_BUILD=OFF compiles every file alone (slower; shows a missing #include).
option(TIERCACHE_UNITY_BUILD "Compile our programs as a few unity translation units (faster builds)" ON)

function(tiercache_unity_groups target)
  set(group "")
  foreach(arg IN LISTS ARGN)
    if(arg MATCHES "\\.(cpp|cc)$")
      if(group STREQUAL "")
        message(FATAL_ERROR "tiercache_unity_groups(${target}): '${arg}' comes before a group name")
      endif()
      target_sources(${target} PRIVATE ${arg})
      set_source_files_properties(${arg} TARGET_DIRECTORY ${target} PROPERTIES UNITY_GROUP "${target}-${group}")
    else()
      set(group "${arg}")
    endif()
  endforeach()
  set_target_properties(${target} PROPERTIES UNITY_BUILD ${TIERCACHE_UNITY_BUILD} UNITY_BUILD_MODE GROUP)
endfunction()
