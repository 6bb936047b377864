// `alignkit data ratings-to-pairs` on a hand-made file (the exact pairs of
// each strategy, the dropped items and the summary), `data validate` and
// `data stats` (counts, duplicates, chosen == rejected, empty fields, token
// lengths, file:line errors, exit 2), and their bad input.
#include <doctest/doctest.h>

#include "data_test_util.hpp"

using namespace data_test;

namespace {

// Ratings: P1 plain; P2 two raters averaged (X 4.5, Y 2.5, Z 4.5); P3 one
// completion; P4 one rating outside 1..5 (D dropped); P5 ratings 0.5 apart.
std::string ratings_file(const std::string& dir) {
  const std::string path = dir + "/ratings.jsonl";
  write_file(path, jsonl({
                       {{"prompt", "P1"}, {"completions", {{{"text", "A"}, {"rating", 5}}, {{"text", "B"}, {"rating", 3}}, {{"text", "C"}, {"rating", 4}}}}},
                       {{"prompt", "P2"}, {"completions", {{{"text", "X"}, {"rating", {4, 5}}}, {{"text", "Y"}, {"rating", {2, 3}}}, {{"text", "Z"}, {"rating", {5, 4}}}}}},
                       {{"prompt", "P3"}, {"completions", {{{"text", "only"}, {"rating", 4}}}}},
                       {{"prompt", "P4"}, {"completions", {{{"text", "D"}, {"rating", 7}}, {{"text", "E"}, {"rating", 2}}, {{"text", "F"}, {"rating", 3}}}}},
                       {{"prompt", "P5"}, {"completions", {{{"text", "G"}, {"rating", 3}}, {{"text", "H"}, {"rating", 3.5}}}}},
                   }));
  return path;
}

// "prompt:chosen>rejected:margin" for each output line, in order.
std::string pairs_of(const std::string& path) {
  std::string pairs;
  for (const json& r : json_lines_of(path))
    pairs += r["prompt"].get<std::string>() + ":" + r["chosen"].get<std::string>() + ">" + r["rejected"].get<std::string>() +
             ":" + json(r["margin"].get<double>()).dump() + " ";
  return pairs;
}

}  // namespace

TEST_CASE("ratings-to-pairs: all-pairs makes every pair with a gap of at least --min-gap, chosen the higher") {
  const std::string dir = scratch("ratings_all");
  const Result r = alignkit("data ratings-to-pairs " + ratings_file(dir) + " --out " + dir + "/prefs.jsonl");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(pairs_of(dir + "/prefs.jsonl") == "P1:A>B:2.0 P1:A>C:1.0 P1:C>B:1.0 P2:X>Y:2.0 P2:Z>Y:2.0 P4:F>E:1.0 ");
  CHECK(contains(r.out, "5 prompts read, 3 gave pairs, 6 pairs written"));
  CHECK(contains(r.out, "dropped: 1 completions with a rating outside 1..5, 1 prompts with fewer than two rated completions, "
                        "1 prompts whose ratings differ by less than the minimum gap"));
  CHECK(contains(r.out, "ratings.jsonl:4: completion 1 dropped: rating 7"));
  CHECK(contains(r.out, "ratings.jsonl:3: skipped: 1 rated completion"));
  // The output is a preference file the trainers read.
  const Result check = alignkit("data validate " + dir + "/prefs.jsonl --type preference");
  CHECK_MESSAGE(check.exit_code == 0, check.err);
}

TEST_CASE("ratings-to-pairs: best-vs-worst makes one pair a prompt; --min-gap 0.5 admits P5") {
  const std::string dir = scratch("ratings_best");
  const std::string in = ratings_file(dir);
  Result r = alignkit("data ratings-to-pairs " + in + " --out " + dir + "/prefs.jsonl --strategy best-vs-worst");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(pairs_of(dir + "/prefs.jsonl") == "P1:A>B:2.0 P2:X>Y:2.0 P4:F>E:1.0 ");
  r = alignkit("data ratings-to-pairs " + in + " --out " + dir + "/prefs05.jsonl --strategy best-vs-worst --min-gap 0.5");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(pairs_of(dir + "/prefs05.jsonl") == "P1:A>B:2.0 P2:X>Y:2.0 P4:F>E:1.0 P5:H>G:0.5 ");
}

TEST_CASE("ratings-to-pairs: bad input exits 2 with the file and line, and writes nothing") {
  const std::string dir = scratch("ratings_bad");
  write_file(dir + "/broken.jsonl", "{\"prompt\": \"P\", \"completions\": [{\"text\": \"a\", \"rating\": 1}, {\"text\": \"b\", \"rating\": 2}]}\n{not json\n");
  Result r = alignkit("data ratings-to-pairs " + dir + "/broken.jsonl --out " + dir + "/out.jsonl");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "broken.jsonl:2: not valid JSON"));
  CHECK_FALSE(fs::exists(dir + "/out.jsonl"));
  write_file(dir + "/shape.jsonl", "{\"prompt\": \"P\", \"completions\": [{\"rating\": 2}]}\n");
  r = alignkit("data ratings-to-pairs " + dir + "/shape.jsonl --out " + dir + "/out.jsonl");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "shape.jsonl:1: completion 1 needs \"text\" and \"rating\""));
  const std::string in = ratings_file(dir);
  r = alignkit("data ratings-to-pairs " + in + " --out " + dir + "/no/such/folder/out.jsonl");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "does not exist"));
  r = alignkit("data ratings-to-pairs " + in + " --out " + dir + "/out.jsonl --strategy best");
  CHECK(r.exit_code == 2);
  r = alignkit("data ratings-to-pairs " + dir + "/missing.jsonl --out " + dir + "/out.jsonl");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "missing.jsonl: cannot open"));
}

TEST_CASE("data stats counts duplicates, chosen == rejected and empty fields; validate accepts the file") {
  const std::string dir = scratch("stats");
  const std::string path = dir + "/prefs.jsonl";
  write_file(path, jsonl({
                       {{"prompt", "1+1="}, {"chosen", "2"}, {"rejected", "3"}},
                       {{"prompt", "1+2="}, {"chosen", "3"}, {"rejected", "3"}},
                       {{"prompt", "1+1="}, {"chosen", "2"}, {"rejected", "3"}},
                       {{"prompt", "2+2="}, {"chosen", ""}, {"rejected", "5"}},
                       {{"prompt", "2+3="}, {"chosen", "5"}, {"rejected", "55555"}},
                   }));
  const Result r = alignkit("data stats " + path + " --json");
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  const json s = json::parse(r.out);
  CHECK(s["type"] == "preference");
  CHECK(s["records"] == 5);
  CHECK(s["unique_prompts"] == 4);
  CHECK(s["duplicates"] == 1);
  CHECK(s["chosen_equals_rejected"] == 1);
  CHECK(s["records_with_empty_fields"] == 1);
  CHECK(s["chars"]["rejected"]["max"] == 5.0);
  CHECK(s["chars"]["rejected"]["p50"] == 1.0);
  const Result v = alignkit("data validate " + path + " --type preference");
  CHECK(v.exit_code == 0);
  CHECK(contains(v.err, "prefs.jsonl:3: duplicate of line 1"));
  CHECK(contains(v.err, "prefs.jsonl:2: chosen == rejected"));
  CHECK(contains(v.err, "prefs.jsonl:4: field 'chosen' is empty"));
}

TEST_CASE("data validate: schema errors with file:line, a wrong --type and an empty file exit 2") {
  const std::string dir = scratch("validate_bad");
  const std::string path = dir + "/bad.jsonl";
  write_file(path, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n"
                   "{\"prompt\": \"a\", \"chosen\": \"b\"}\n"
                   "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
                   "{\"prompt\": \"a\", \"chosen\": 5, \"rejected\": \"c\"}\n"
                   "[1, 2]\n");
  Result r = alignkit("data validate " + path);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "bad.jsonl:2: missing field 'rejected'"));
  CHECK(contains(r.err, "bad.jsonl:3: a prompt-completion record in a file of preference records"));
  CHECK(contains(r.err, "bad.jsonl:4: field 'chosen' must be a string or a list of messages"));
  CHECK(contains(r.err, "bad.jsonl:5: expected a JSON object"));
  CHECK(contains(r.out, "4 errors"));
  write_file(dir + "/ok.jsonl", "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n");
  r = alignkit("data validate " + dir + "/ok.jsonl --type prompt-completion");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "ok.jsonl:1: a preference record, but --type is prompt-completion"));
  write_file(dir + "/empty.jsonl", "\n");
  r = alignkit("data stats " + dir + "/empty.jsonl");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "no records"));
  write_file(dir + "/notjson.jsonl", "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{oops\n");
  r = alignkit("data validate " + dir + "/notjson.jsonl");
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "notjson.jsonl:2: not valid JSON"));
}
