# alignkit_add_plugin(NAME SOURCES src... [LINK_LIBRARIES lib...] [TORCH_FREE]
#                     [OUTPUT_DIRECTORY dir])
#
# Builds an AlignKit plugin: a MODULE library with hidden visibility (only the
# entry symbol is exported, by ALIGNKIT_PLUGIN), linked against the SDK.
# TORCH_FREE plugins (tokenizers) link the headers only, never LibTorch.
function(alignkit_add_plugin name)
  cmake_parse_arguments(ARG "TORCH_FREE" "OUTPUT_DIRECTORY" "SOURCES;LINK_LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "alignkit_add_plugin(${name}): SOURCES is required")
  endif()
  add_library(${name} MODULE ${ARG_SOURCES})
  set_target_properties(${name} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    CXX_STANDARD 17
    CXX_STANDARD_REQUIRED ON
    POSITION_INDEPENDENT_CODE ON)
  if(ARG_TORCH_FREE)
    target_link_libraries(${name} PRIVATE AlignKit::sdk_headers)
  else()
    target_link_libraries(${name} PRIVATE AlignKit::sdk)
  endif()
  if(ARG_LINK_LIBRARIES)
    target_link_libraries(${name} PRIVATE ${ARG_LINK_LIBRARIES})
  endif()
  # Every symbol must resolve when the plugin is built, not when it is loaded.
  target_link_options(${name} PRIVATE "LINKER:--no-undefined")
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${ARG_OUTPUT_DIRECTORY}")
  endif()
endfunction()
