# Writes one gzip'ed man page from a command's own --help and --version (cmake -P, called by
# ManPages.cmake at build time), so the page says what the command says.
#   -DHELP2MAN=  -DPROGRAM=/path/to/exe  -DPAGE=tiercache-gen  -DSECTION=1
#   -DHELP_OPTION="gen --help"  -DDESCRIPTION="..."  -DSEE_ALSO="tiercache(1), ..."  -DOUT=page.1.gz
cmake_minimum_required(VERSION 3.20)
foreach(_var HELP2MAN PROGRAM PAGE SECTION HELP_OPTION DESCRIPTION OUT)
  if(NOT DEFINED ${_var})
    message(FATAL_ERROR "help2man.cmake: -D${_var}= is missing")
  endif()
endforeach()

get_filename_component(_dir "${PROGRAM}" DIRECTORY)
get_filename_component(_name "${PROGRAM}" NAME)
set(_page "${OUT}.tmp")

set(_include "")
if(SEE_ALSO)
  # help2man's include file: a [section] header, then roff. "a(1), b(1)" -> .BR lines.
  string(REGEX REPLACE "([^ ,]+)\\(([0-9])\\)" ".BR \\1 (\\2)" _refs "${SEE_ALSO}")
  string(REPLACE ", " ",\n" _refs "${_refs}")
  file(WRITE "${OUT}.see-also" "[SEE ALSO]\n${_refs}\n")
  set(_include "--include=${OUT}.see-also")
endif()

# Run the command by its bare name (from PATH), so its usage line says "tiercache", not the
# build directory's path.
execute_process(
  COMMAND ${CMAKE_COMMAND} -E env "PATH=${_dir}:$ENV{PATH}"
          ${HELP2MAN} --no-info --no-discard-stderr --section=${SECTION}
                      --name=${DESCRIPTION} --help-option=${HELP_OPTION} --version-option=--version
                      ${_include} --output=${_page} ${_name}
  RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "help2man failed (${_rc}) on '${_name} ${HELP_OPTION}'")
endif()

# A subcommand's page is named after it (tiercache-gen), not after the command help2man ran.
if(NOT PAGE STREQUAL _name)
  file(READ "${_page}" _roff)
  string(TOUPPER "${PAGE}" _title)
  string(REPLACE "-" "\\\\-" _title_roff "${_title}")  # roff's \- , doubled for the regex replacement
  string(REGEX REPLACE "\n\\.TH [^ ]+ " "\n.TH ${_title_roff} " _roff "${_roff}")
  string(REGEX REPLACE "\n\\.SH NAME\n[^\n]*\\\\- " "\n.SH NAME\n${PAGE} \\\\- " _roff "${_roff}")
  file(WRITE "${_page}" "${_roff}")
endif()

# -n: no name or time stamp in the gzip header, so the same page gives the same bytes.
execute_process(COMMAND gzip -9 -n -c "${_page}" OUTPUT_FILE "${OUT}" RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "gzip failed (${_rc}) on ${_page}")
endif()
file(REMOVE "${_page}" "${OUT}.see-also")
