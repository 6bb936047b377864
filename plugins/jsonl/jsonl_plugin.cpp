// The "jsonl" dataset plugin: TRL-format JSON Lines files (see jsonl_dataset.hpp).
//
// It loads the one file the caller names in DataRequest::path. The caller
// (host or algorithm) picks `path` or `eval_path`, and when only
// `eval_fraction` is set holds that share of `path` out itself
// (alignkit::holdout_split in batch.hpp), so one parsed file serves both splits.
#include <memory>
#include <stdexcept>
#include <string>

#include "alignkit/dataset.hpp"
#include "alignkit/plugin.hpp"
#include "jsonl_dataset.hpp"

namespace {

using alignkit::ConfigView;

class JsonlProvider final : public alignkit::DatasetProvider {
 public:
  std::unique_ptr<alignkit::Dataset> load(const alignkit::DataRequest& request) const override {
    const alignkit::jsonl::LoadOptions options = read_options(request.options);
    try {
      return alignkit::jsonl::load_jsonl(request.path, options, request.tokenizer);
    } catch (const std::exception& e) {
      // Only std::runtime_error itself crosses the plugin boundary.
      throw std::runtime_error(e.what());
    }
  }

 private:
  // The host has checked the table against the settings below and filled in
  // defaults; a caller that passes no table gets the same defaults.
  static alignkit::jsonl::LoadOptions read_options(const ConfigView& data) {
    alignkit::jsonl::LoadOptions options;
    if (data.has("chat_template")) {
      try {
        options.chat_template = alignkit::jsonl::parse_chat_template(data.get_string("chat_template"));
      } catch (const std::invalid_argument& e) {
        throw alignkit::ConfigError(data.locate("chat_template") + ": " + e.what());
      }
    }
    if (data.has("skip_bad_records")) options.skip_bad_records = data.get_bool("skip_bad_records");
    return options;
  }
};

void register_jsonl(alignkit::Registry& registry) {
  namespace setting = alignkit::setting;
  alignkit::ComponentInfo info;
  info.kind = alignkit::ComponentKind::Dataset;
  info.name = "jsonl";
  info.version = ALIGNKIT_VERSION_STRING;
  info.description = "JSON Lines files in TRL's dataset formats (standard, conversational or pre-tokenized)";
  info.settings = {
      setting::required_text("path", "JSON Lines file of training records, one TRL-format record a line"),
      setting::optional_text("eval_path", "JSON Lines file of evaluation records (same type as `path`)"),
      setting::number("eval_fraction", 0.0,
                      "share of `path` held out for evaluation when `eval_path` is not set, chosen by run.seed "
                      "(0: no evaluation)",
                      0.0),
      setting::text("chat_template", "chatml",
                    "how conversational records are rendered: chatml (TRL's default chat format), llama2, "
                    "zephyr or plain",
                    alignkit::jsonl::chat_template_names()),
      setting::boolean("skip_bad_records", false,
                       "skip and count lines that are not JSON or do not match the file's record type, "
                       "instead of stopping at the first"),
  };
  registry.add_dataset(std::move(info), std::make_shared<JsonlProvider>());
}

}  // namespace

ALIGNKIT_PLUGIN("jsonl", ALIGNKIT_VERSION_STRING, "TRL-format JSON Lines datasets", register_jsonl)
