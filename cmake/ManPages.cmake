# Man pages, made at build time by help2man from the commands' own --help and --version: they
# cannot drift from the options. tiercache(1), tiercache-fuse(1), one tiercache-SUB(1) per
# subcommand and mount.fuse.tiercache(8), gzip'ed into share/man as Debian has them.
find_program(HELP2MAN help2man)
# Off by default in sanitizer builds: running the commands there at build time adds nothing.
if(HELP2MAN AND TIERCACHE_SANITIZE STREQUAL "")
  set(_man_default ON)
else()
  set(_man_default OFF)
endif()
option(TIERCACHE_MAN_PAGES "Generate and install man pages with help2man (Debian: help2man)" ${_man_default})
if(NOT TIERCACHE_MAN_PAGES OR NOT TARGET tiercache-fuse OR NOT TARGET tiercache-cli)
  if(NOT HELP2MAN)
    message(STATUS "tiercache: no man pages (help2man not found: scripts/install-deps installs it)")
  endif()
  return()
endif()
if(NOT HELP2MAN)
  message(FATAL_ERROR "TIERCACHE_MAN_PAGES is ON but help2man was not found: install help2man "
                      "(scripts/install-deps), or pass -DTIERCACHE_MAN_PAGES=OFF")
endif()

set(TIERCACHE_MAN_DIR ${CMAKE_CURRENT_BINARY_DIR}/man)
set(_man1 "")

# tiercache_man_page(PAGE TARGET "HELP OPTION" "DESCRIPTION" "SEE ALSO")
function(tiercache_man_page page target help_option description see_also)
  set(out ${TIERCACHE_MAN_DIR}/${page}.1.gz)
  add_custom_command(OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DHELP2MAN=${HELP2MAN} -DPROGRAM=$<TARGET_FILE:${target}>
            -DPAGE=${page} -DSECTION=1 -DHELP_OPTION=${help_option} -DDESCRIPTION=${description}
            -DSEE_ALSO=${see_also} -DOUT=${out} -P ${PROJECT_SOURCE_DIR}/cmake/help2man.cmake
    DEPENDS ${target} ${PROJECT_SOURCE_DIR}/cmake/help2man.cmake
    COMMENT "Man page ${page}(1)"
    VERBATIM)
  set(_man1 ${_man1} ${out} PARENT_SCOPE)
endfunction()

# The subcommands and their one-line descriptions (as in tiercache --help).
set(_subcommands
  "gen|write a synthetic ImageNet-like dataset (class folders of JPEG-sized files)"
  "index|write the record index of a dataset's tar shards"
  "stats|show a mount's cache counters"
  "tiers|show the memory this host has and the tiers tiercache would use by default"
  "warm|read files through a mount so that the cache holds them"
  "serve|own a shared cache without a mount: jobs attach to it by name"
  "bench|benchmarks"
  "bench read|read every file under DIR whole, in a seeded shuffled order per epoch")
set(_sub_pages "")
foreach(_entry IN LISTS _subcommands)
  string(REGEX REPLACE "\\|.*" "" _sub "${_entry}")
  string(REPLACE " " "-" _sub "${_sub}")
  list(APPEND _sub_pages "tiercache-${_sub}(1)")
endforeach()
list(JOIN _sub_pages ", " _sub_see_also)

file(MAKE_DIRECTORY ${TIERCACHE_MAN_DIR})
tiercache_man_page(tiercache-fuse tiercache-fuse --help
  "mount a dataset directory read-only through the tiercache cache"
  "tiercache(1), mount.fuse.tiercache(8), fusermount3(1)")
tiercache_man_page(tiercache tiercache-cli --help
  "companion tool of tiercache-fuse: mount stats, cache warming, synthetic datasets, record indexes, benchmarks"
  "tiercache-fuse(1), ${_sub_see_also}")
foreach(_entry IN LISTS _subcommands)
  string(REGEX REPLACE "\\|.*" "" _sub "${_entry}")
  string(REGEX REPLACE "^[^|]*\\|" "" _what "${_entry}")
  string(REPLACE " " "-" _page "tiercache-${_sub}")
  tiercache_man_page(${_page} tiercache-cli "${_sub} --help" "${_what}" "tiercache(1), tiercache-fuse(1)")
endforeach()

# mount -t fuse.tiercache runs mount.fuse.tiercache, which is tiercache-fuse: a .so link to its page.
set(_man8 ${TIERCACHE_MAN_DIR}/mount.fuse.tiercache.8.gz)
file(WRITE ${TIERCACHE_MAN_DIR}/mount.fuse.tiercache.8 ".so man1/tiercache-fuse.1\n")
execute_process(COMMAND gzip -9 -n -c ${TIERCACHE_MAN_DIR}/mount.fuse.tiercache.8 OUTPUT_FILE ${_man8})

add_custom_target(tiercache-man ALL DEPENDS ${_man1})
install(FILES ${_man1} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${_man8} DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
