// Keras initializers (culayers/nn/initializer.hpp): values and their statistics, Glorot's fans,
// reproducibility from a seed, JSON configs in Keras's layout both ways, and malformed configs.
#include "culayers/nn/initializer.hpp"

#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace {

namespace nn = culayers::nn;
using culayers::Shape;
using culayers::Status;
using nn::Initializer;
using nn::Json;

struct Moments {
  double mean;
  double var;
  double min;
  double max;
};

Moments moments(const std::vector<double>& v) {
  Moments m{0.0, 0.0, v.empty() ? 0.0 : v[0], v.empty() ? 0.0 : v[0]};
  for (double x : v) {
    m.mean += x;
    m.min = std::min(m.min, x);
    m.max = std::max(m.max, x);
  }
  m.mean /= static_cast<double>(v.size());
  for (double x : v) {
    m.var += (x - m.mean) * (x - m.mean);
  }
  m.var /= static_cast<double>(v.size());
  return m;
}

TEST(NnInitializer, ConstantKinds) {
  std::vector<double> v;
  ASSERT_EQ(Initializer::zeros().generate(Shape{3, 4}, &v), Status::kSuccess);
  ASSERT_EQ(v.size(), 12u);
  for (double x : v) {
    EXPECT_EQ(x, 0.0);
  }
  ASSERT_EQ(Initializer::ones().generate(Shape{5}, &v), Status::kSuccess);
  for (double x : v) {
    EXPECT_EQ(x, 1.0);
  }
  ASSERT_EQ(Initializer::constant(-2.5).generate(Shape{2, 2, 2}, &v), Status::kSuccess);
  ASSERT_EQ(v.size(), 8u);
  for (double x : v) {
    EXPECT_EQ(x, -2.5);
  }
  ASSERT_EQ(Initializer::ones().generate(Shape{0, 7}, &v), Status::kSuccess);
  EXPECT_TRUE(v.empty());
}

// 2^16 draws: the sample mean of U(a, b) has standard error (b - a) / sqrt(12 n) ~ 1.1e-3 (b - a); 6 of them
// bound it with failure probability ~2e-9. The variance (b - a)^2 / 12 is checked to 3%.
TEST(NnInitializer, RandomUniformStatistics) {
  std::vector<double> v;
  ASSERT_EQ(Initializer::random_uniform(-1.0, 3.0, 11).generate(Shape{256, 256}, &v), Status::kSuccess);
  const Moments m = moments(v);
  EXPECT_NEAR(m.mean, 1.0, 6 * 4.0 / std::sqrt(12.0 * 65536.0));
  EXPECT_NEAR(m.var, 16.0 / 12.0, 0.03 * 16.0 / 12.0);
  EXPECT_GT(m.min, -1.0);
  EXPECT_LT(m.max, 3.0);
}

// N(mean, stddev): sample mean within 6 standard errors, variance within 3%.
TEST(NnInitializer, RandomNormalStatistics) {
  std::vector<double> v;
  ASSERT_EQ(Initializer::random_normal(0.5, 2.0, 12).generate(Shape{65537}, &v), Status::kSuccess);
  ASSERT_EQ(v.size(), 65537u); // an odd count: the last Box-Muller pair is cut
  const Moments m = moments(v);
  EXPECT_NEAR(m.mean, 0.5, 6 * 2.0 / std::sqrt(65537.0));
  EXPECT_NEAR(m.var, 4.0, 0.03 * 4.0);
}

// Keras's fans: limit = sqrt(6 / (fan_in + fan_out)); the draws fill (-limit, limit) (max |x| within 1% of it
// for 2^14+ draws) and never leave it.
TEST(NnInitializer, GlorotUniformUsesKerasFans) {
  struct Case {
    Shape shape;
    double fan_in;
    double fan_out;
  };
  const Case cases[] = {{Shape{128, 64}, 128, 64},
                        {Shape{20000}, 20000, 20000},
                        {Shape{3, 3, 64, 32}, 9 * 64, 9 * 32},
                        {Shape{5, 32, 128}, 5 * 32, 5 * 128}};
  for (const Case& c : cases) {
    std::vector<double> v;
    ASSERT_EQ(Initializer::glorot_uniform(3).generate(c.shape, &v), Status::kSuccess);
    const double limit = std::sqrt(6.0 / (c.fan_in + c.fan_out));
    double largest = 0.0;
    for (double x : v) {
      ASSERT_LT(std::fabs(x), limit);
      largest = std::max(largest, std::fabs(x));
    }
    EXPECT_GT(largest, 0.99 * limit) << c.shape;
  }
}

TEST(NnInitializer, SeedsReproduceAndDiffer) {
  std::vector<double> a;
  std::vector<double> b;
  std::vector<double> c;
  ASSERT_EQ(Initializer::random_normal(0.0, 1.0, 7).generate(Shape{1000}, &a), Status::kSuccess);
  ASSERT_EQ(Initializer::random_normal(0.0, 1.0, 7).generate(Shape{1000}, &b), Status::kSuccess);
  ASSERT_EQ(Initializer::random_normal(0.0, 1.0, 8).generate(Shape{1000}, &c), Status::kSuccess);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // Unseeded: a fresh seed each time (Keras), so two draws differ.
  ASSERT_EQ(Initializer::random_uniform(0.0, 1.0).generate(Shape{64}, &a), Status::kSuccess);
  ASSERT_EQ(Initializer::random_uniform(0.0, 1.0).generate(Shape{64}, &b), Status::kSuccess);
  EXPECT_NE(a, b);
}

TEST(NnInitializer, JsonRoundTripInKerasLayout) {
  const Initializer all[] = {Initializer::zeros(),
                             Initializer::ones(),
                             Initializer::constant(0.25),
                             Initializer::random_uniform(-0.1, 0.2, 5),
                             Initializer::random_normal(1.0, 0.5),
                             Initializer::glorot_uniform(9)};
  for (const Initializer& init : all) {
    const Json j = init.to_json();
    ASSERT_TRUE(j.contains("class_name")) << j.dump();
    ASSERT_TRUE(j["config"].is_object()) << j.dump();
    Initializer back = Initializer::constant(42.0);
    ASSERT_EQ(Initializer::from_json(j, &back), Status::kSuccess) << culayers::last_error_message();
    EXPECT_EQ(back, init) << j.dump();
    // Through text as well.
    ASSERT_EQ(Initializer::from_json(Json::parse(j.dump()), &back), Status::kSuccess);
    EXPECT_EQ(back, init) << j.dump();
  }
  EXPECT_EQ(Initializer::glorot_uniform(9).to_json(),
            Json::parse(R"({"class_name": "GlorotUniform", "config": {"seed": 9}})"));
  EXPECT_EQ(Initializer::random_uniform(-0.05, 0.05).to_json(),
            Json::parse(R"({"class_name": "RandomUniform", "config": {"minval": -0.05, "maxval": 0.05,
                            "seed": null}})"));
  EXPECT_EQ(Initializer::constant(3.0).to_json(),
            Json::parse(R"({"class_name": "Constant", "config": {"value": 3.0}})"));
  // Non-finite constants: written as "NaN" / "Infinity" / "-Infinity" strings and read back.
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(Initializer::constant(-inf).to_json(),
            Json::parse(R"({"class_name": "Constant", "config": {"value": "-Infinity"}})"));
  Initializer back = Initializer::zeros();
  ASSERT_EQ(Initializer::from_json(Json::parse(Initializer::constant(inf).to_json().dump()), &back),
            Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_EQ(back, Initializer::constant(inf));
  ASSERT_EQ(Initializer::from_json(
                Json::parse(Initializer::constant(std::numeric_limits<double>::quiet_NaN()).to_json().dump()),
                &back),
            Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_TRUE(std::isnan(back.value));
  EXPECT_EQ(
      Initializer::from_json(Json::parse(R"({"class_name": "Constant", "config": {"value": "nan"}})"), &back),
      Status::kErrorParse); // only the three exact spellings
  // A random initializer's parameters must be finite (-Infinity .. Infinity would draw NaN weights).
  EXPECT_EQ(Initializer::from_json(Json::parse(R"({"class_name": "RandomUniform",
                                                  "config": {"minval": "-Infinity", "maxval": "Infinity"}})"),
                                   &back),
            Status::kErrorInvalidValue);
  EXPECT_EQ(Initializer::from_json(
                Json::parse(R"({"class_name": "RandomNormal", "config": {"mean": "NaN"}})"), &back),
            Status::kErrorInvalidValue);
}

TEST(NnInitializer, KerasIdentifiersAndDefaults) {
  Initializer init;
  ASSERT_EQ(Initializer::from_json(Json("glorot_uniform"), &init), Status::kSuccess);
  EXPECT_EQ(init, Initializer::glorot_uniform());
  ASSERT_EQ(Initializer::from_json(Json("ones"), &init), Status::kSuccess);
  EXPECT_EQ(init, Initializer::ones());
  // Keras's defaults fill the keys a config leaves out.
  ASSERT_EQ(Initializer::from_json(Json::parse(R"({"class_name": "RandomNormal", "config": {}})"), &init),
            Status::kSuccess);
  EXPECT_EQ(init.mean, 0.0);
  EXPECT_EQ(init.stddev, 0.05);
  EXPECT_FALSE(init.seed.has_value());
}

TEST(NnInitializer, MalformedConfigsAreClearErrors) {
  Initializer init = Initializer::constant(7.0);
  const Initializer before = init;
  struct Bad {
    const char* text;
    Status status;
  };
  const Bad bad[] = {
      {R"("he_normal")", Status::kErrorUnknownClass},
      {R"({"class_name": "Orthogonal", "config": {}})", Status::kErrorUnknownClass},
      {R"({"config": {}})", Status::kErrorParse},
      {R"(42)", Status::kErrorParse},
      {R"({"class_name": "Constant", "config": {"value": "x"}})", Status::kErrorParse},
      {R"({"class_name": "Constant", "config": [1]})", Status::kErrorParse},
      {R"({"class_name": "RandomUniform", "config": {"seed": -3}})", Status::kErrorParse},
      {R"({"class_name": "RandomUniform", "config": {"seed": 1.5}})", Status::kErrorParse},
      {R"({"class_name": "RandomUniform", "config": {"minval": 2, "maxval": 1}})",
       Status::kErrorInvalidValue},
      {R"({"class_name": "RandomNormal", "config": {"stddev": -1}})", Status::kErrorInvalidValue},
  };
  for (const Bad& b : bad) {
    EXPECT_EQ(Initializer::from_json(Json::parse(b.text), &init), b.status) << b.text;
    EXPECT_EQ(std::string(culayers::last_error_message()).rfind("initializer: ", 0), 0u)
        << culayers::last_error_message();
    EXPECT_EQ(init, before) << b.text;
  }
  std::vector<double> v;
  EXPECT_EQ(Initializer::zeros().generate(Shape{2, -1}, &v), Status::kErrorInvalidShape);
  EXPECT_EQ(Initializer::zeros().generate(Shape{2}, nullptr), Status::kErrorNullPointer);
}

// An initializer built in code is checked as a config is: generate refuses parameters that would draw
// NaN or nonsense, and writes nothing.
TEST(NnInitializer, GenerateRefusesBadParameters) {
  const double inf = std::numeric_limits<double>::infinity();
  const double big = std::numeric_limits<double>::max();
  const Initializer bad[] = {
      Initializer::random_uniform(-inf, inf, 1),
      Initializer::random_uniform(0.0, std::numeric_limits<double>::quiet_NaN(), 1),
      Initializer::random_uniform(-big, big, 1), // finite bounds, infinite range: 0 x inf is NaN
      Initializer::random_uniform(1.0, 0.0, 1),
      Initializer::random_normal(inf, 1.0, 1),
      Initializer::random_normal(0.0, -1.0, 1),
  };
  for (const Initializer& init : bad) {
    std::vector<double> v = {42.0};
    EXPECT_EQ(init.generate(Shape{64}, &v), Status::kErrorInvalidValue) << init.to_json().dump();
    EXPECT_EQ(v, std::vector<double>{42.0});
    // The same parameters from a config are refused alike.
    Initializer back;
    EXPECT_EQ(Initializer::from_json(init.to_json(), &back), Status::kErrorInvalidValue)
        << init.to_json().dump();
  }
  // The widest finite range still draws finite values.
  std::vector<double> v;
  ASSERT_EQ(Initializer::random_uniform(-big / 2, big / 2, 3).generate(Shape{1000}, &v), Status::kSuccess);
  for (double x : v) {
    EXPECT_TRUE(std::isfinite(x)) << x;
  }
}

} // namespace
