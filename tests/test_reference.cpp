// Every op against PyTorch: the cases of tests/reference/ops.safetensors (written by gen_ops.py, naming
// in tests/reference/README.md), float64 forward and gradients, float32 forward, and gradcheck.
// Set SPDLAB_REF_VERBOSE=1 to print each case's worst error.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "core/ops.h"
#include "kernels/kernels.h"
#include "tests/support.h"

using namespace spdlab;

namespace {

struct Case {
  std::string name, op, dtype;
  json::Value params;
  std::vector<Tensor> inputs;
  std::vector<int64_t> diff;  // indices of differentiable inputs
  Tensor out, r;
  std::map<int64_t, Tensor> grads;
};

struct Fixture {
  std::vector<Case> cases;
};

Tensor load_exact(const io::SafetensorsFile& f, const std::string& name) {
  const std::string& dt = f.info(name).dtype;
  DType want = dt == "F64" ? DType::f64 : dt == "I64" ? DType::i64 : DType::f32;
  return f.load(name, want);
}

const Fixture& fixture() {
  static const Fixture fx = [] {
    io::SafetensorsFile f(test::reference_path("ops.safetensors"));
    Fixture out;
    for (const auto& [name, text] : f.metadata()) {
      if (name.rfind("__", 0) == 0) continue;
      Case c;
      c.name = name;
      c.params = json::parse(text, "ops.safetensors metadata '" + name + "'");
      c.op = c.params.find("op")->as_string();
      c.dtype = c.params.find("dtype")->as_string();
      int64_t n = c.params.find("n_inputs")->as_int();
      for (int64_t i = 0; i < n; ++i) c.inputs.push_back(load_exact(f, name + ".in" + std::to_string(i)));
      for (const auto& d : c.params.find("diff")->as_array()) c.diff.push_back(d.as_int());
      c.out = load_exact(f, name + ".out");
      if (!c.diff.empty()) c.r = load_exact(f, name + ".r");
      for (int64_t i : c.diff) c.grads[i] = load_exact(f, name + ".grad" + std::to_string(i));
      out.cases.push_back(std::move(c));
    }
    return out;
  }();
  return fx;
}

std::vector<int64_t> int_list(const json::Value& v) {
  std::vector<int64_t> out;
  for (const auto& x : v.as_array()) out.push_back(x.as_int());
  return out;
}

// Runs the case's op on `in` (the case's inputs, or gradcheck's copies of them).
Tensor run_op(const Case& c, const std::vector<Tensor>& in) {
  const json::Value& p = c.params;
  auto num = [&](const char* key) { return p.find(key)->as_double(); };
  auto integer = [&](const char* key) { return p.find(key)->as_int(); };
  auto flag = [&](const char* key) { return p.find(key)->as_bool(); };
  const std::string& op = c.op;
  if (op == "add") return add(in[0], in[1]);
  if (op == "sub") return sub(in[0], in[1]);
  if (op == "mul") return mul(in[0], in[1]);
  if (op == "div") return div(in[0], in[1]);
  if (op == "maximum") return maximum(in[0], in[1]);
  if (op == "add_scalar") return add(in[0], num("scalar"));
  if (op == "mul_scalar") return mul(in[0], num("scalar"));
  if (op == "rsub") return rsub(in[0], num("scalar"));
  if (op == "pow") return pow(in[0], num("exponent"));
  if (op == "neg") return neg(in[0]);
  if (op == "exp") return exp(in[0]);
  if (op == "log") return log(in[0]);
  if (op == "sqrt") return sqrt(in[0]);
  if (op == "rsqrt") return rsqrt(in[0]);
  if (op == "tanh") return tanh(in[0]);
  if (op == "abs") return abs(in[0]);
  if (op == "relu") return relu(in[0]);
  if (op == "gelu")
    return gelu(in[0], p.find("approximate")->as_string() == "tanh" ? GeluApprox::tanh : GeluApprox::none);
  if (op == "sum") return sum(in[0], int_list(*p.find("axes")), flag("keepdim"));
  if (op == "mean") return mean(in[0], int_list(*p.find("axes")), flag("keepdim"));
  if (op == "max") return max(in[0], int_list(*p.find("axes")), flag("keepdim"));
  if (op == "var") return var(in[0], int_list(*p.find("axes")), flag("unbiased"), flag("keepdim"));
  if (op == "argmax") return argmax(in[0], integer("axis"));
  if (op == "matmul") return matmul(in[0], in[1]);
  if (op == "linear") return linear(in[0], in[1], flag("bias") ? in[2] : Tensor());
  if (op == "gelu_linear") return gelu_linear(in[0], in[1], flag("bias") ? in[2] : Tensor());
  if (op == "softmax") return softmax(in[0], integer("axis"));
  if (op == "log_softmax") return log_softmax(in[0], integer("axis"));
  if (op == "layer_norm_linear")
    return layer_norm_linear(in[0], in[1], in[2], num("eps"), in[3], flag("bias") ? in[4] : Tensor());
  if (op == "layer_norm")
    return flag("affine") ? layer_norm(in[0], in[1], in[2], num("eps"))
                          : layer_norm(in[0], Tensor(), Tensor(), num("eps"));
  if (op == "cross_entropy") return cross_entropy(in[0], in[1], num("label_smoothing"));
  if (op == "sdpa") {
    const json::Value* s = p.find("scale");
    return scaled_dot_product_attention(in[0], in[1], in[2],
                                        s->is_null() ? std::nullopt : std::optional<double>(s->as_double()));
  }
  if (op == "concat") return concat(in, integer("axis"));
  if (op == "index_select") return index_select(in[0], integer("axis"), in[1]);
  if (op == "gather") return gather(in[0], integer("axis"), in[1]);
  if (op == "where") return where(in[0], in[1], in[2]);
  if (op == "masked_fill") return masked_fill(in[0], in[1], num("value"));
  if (op == "unfold_patches") return unfold_patches(in[0], integer("patch"));
  throw Error("test_reference: no runner for op '" + op + "' (case " + c.name + ")");
}

// Fresh leaves on `device`, so no test sees another's gradients.
std::vector<Tensor> leaves(const Case& c, bool requires_grad, Device device = Device::cpu) {
  std::vector<Tensor> in;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    Tensor t = c.inputs[i].detach().to(device).clone();
    bool d = requires_grad && std::count(c.diff.begin(), c.diff.end(), int64_t(i));
    if (d) t.requires_grad_();
    in.push_back(t);
  }
  return in;
}

struct Cmp {
  bool ok = true;
  double max_abs = 0, max_rel = 0;
  std::string detail;
};

// |got - want| <= atol + rtol |want| elementwise; shapes must match exactly (0-d included).
Cmp compare(const Tensor& got, const Tensor& want, double atol, double rtol) {
  Cmp c;
  if (got.shape() != want.shape()) {
    c.ok = false;
    c.detail = "shape " + shape_str(got.shape()) + ", expected " + shape_str(want.shape());
    return c;
  }
  double worst = -1;
  Tensor gh = got.detach().cpu(), wh = want.detach().cpu();  // one copy each from a GPU, not one per element
  for (int64_t i = 0; i < want.numel(); ++i) {
    double g = gh.at(i), w = wh.at(i), err = std::abs(g - w);
    c.max_abs = std::max(c.max_abs, err);
    c.max_rel = std::max(c.max_rel, err / std::max(std::abs(w), 1e-300));
    double excess = err - (atol + rtol * std::abs(w));
    if (!(excess <= 0) && (excess > worst || std::isnan(g))) {
      c.ok = false;
      worst = std::isnan(g) ? INFINITY : excess;
      std::ostringstream os;
      os.precision(17);
      os << "element " << i << ": got " << g << ", expected " << w;
      c.detail = os.str();
    }
  }
  return c;
}

bool verbose() { return std::getenv("SPDLAB_REF_VERBOSE") != nullptr; }

void report(const std::string& what, const Cmp& r) {
  if (verbose())
    std::cout << (r.ok ? "  ok   " : "  FAIL ") << what << ": max abs " << r.max_abs << ", max rel " << r.max_rel
              << (r.detail.empty() ? "" : "; " + r.detail) << "\n";
  CHECK_MESSAGE(r.ok, what << ": max abs err " << r.max_abs << ", max rel err " << r.max_rel << "; "
                           << r.detail);
}

// gradcheck of the case's differentiable inputs, the others held fixed, with every input on `device`.
void check_gradcheck(const Case& c, Device device) {
  const std::string where = c.name + " gradcheck" + (device.is_cpu() ? "" : " (" + device.str() + ")");
  try {
    std::vector<Tensor> fixed = leaves(c, false, device), free;
    for (int64_t i : c.diff) free.push_back(fixed[i]);
    auto fn = [&](const std::vector<Tensor>& xs) {
      std::vector<Tensor> in = fixed;
      for (size_t j = 0; j < c.diff.size(); ++j) in[c.diff[j]] = xs[j];
      return run_op(c, in);
    };
    GradcheckResult g = gradcheck(fn, free);
    if (verbose())
      std::cout << (g.ok ? "  ok   " : "  FAIL ") << where << ": max abs " << g.max_abs_err << ", max rel "
                << g.max_rel_err << (g.ok ? "" : "; " + g.worst) << "\n";
    CHECK_MESSAGE(g.ok, where << ": max abs err " << g.max_abs_err << ", max rel err " << g.max_rel_err << "; "
                              << g.worst);
  } catch (const std::exception& e) {
    FAIL_CHECK(where << " threw: " << std::string(e.what()));
  }
}

}  // namespace

TEST_SUITE("reference") {
  TEST_CASE("ops fixture covers every differentiable op of core/ops.h") {
    std::set<std::string> seen;
    for (const auto& c : fixture().cases) seen.insert(c.op);
    for (const char* op : {"add", "sub", "mul", "div", "maximum", "add_scalar", "mul_scalar", "rsub", "pow",
                           "neg", "exp", "log", "sqrt", "rsqrt", "tanh", "abs", "relu", "gelu", "sum", "mean",
                           "max", "var", "argmax", "matmul", "linear", "gelu_linear", "softmax", "log_softmax",
                           "layer_norm", "layer_norm_linear", "cross_entropy", "sdpa", "concat", "index_select", "gather", "where", "masked_fill",
                           "unfold_patches"})
      CHECK_MESSAGE(seen.count(op), "no case for " << op);
  }

  TEST_CASE("float64 forward matches PyTorch (atol 1e-12, rtol 1e-10)") {
    for (const auto& c : fixture().cases) {
      if (c.dtype != "f64") continue;
      try {
        report(c.name + " forward", compare(run_op(c, leaves(c, false)), c.out, 1e-12, 1e-10));
      } catch (const std::exception& e) {
        FAIL_CHECK(c.name << " forward threw: " << std::string(e.what()));
      }
    }
  }

  TEST_CASE("float64 gradients match PyTorch (atol 1e-10, rtol 1e-8)") {
    for (const auto& c : fixture().cases) {
      if (c.diff.empty()) continue;
      try {
        std::vector<Tensor> in = leaves(c, true);
        run_op(c, in).backward(c.r);
        for (int64_t i : c.diff) {
          std::string what = c.name + " grad" + std::to_string(i);
          if (!in[i].grad().defined()) {
            FAIL_CHECK(what << ": no gradient reached the input");
            continue;
          }
          report(what, compare(in[i].grad(), c.grads.at(i), 1e-10, 1e-8));
        }
      } catch (const std::exception& e) {
        FAIL_CHECK(c.name << " backward threw: " << std::string(e.what()));
      }
    }
  }

  TEST_CASE("float32 forward matches PyTorch (atol 1e-6, rtol 1e-5)") {
    for (const auto& c : fixture().cases) {
      if (c.dtype != "f32") continue;
      try {
        Tensor y = run_op(c, leaves(c, false));
        CHECK_MESSAGE(y.dtype() == DType::f32, c.name << ": output dtype " << y.dtype());
        report(c.name + " forward", compare(y, c.out, 1e-6, 1e-5));
      } catch (const std::exception& e) {
        FAIL_CHECK(c.name << " forward threw: " << std::string(e.what()));
      }
    }
  }

  TEST_CASE("gradcheck passes on every float64 case (eps 1e-6, atol 1e-6, rtol 1e-6)") {
    for (const auto& c : fixture().cases)
      if (!c.diff.empty()) check_gradcheck(c, Device::cpu);
  }
}

// The same fixtures on the CUDA backend (the emulated GPU in CI): f64 forward and gradients against PyTorch
// at the CPU's tolerances, f32 forward and gradients against the CPU's own results (1e-5 relative), and
// gradcheck with the perturbed inputs on the device.
TEST_SUITE("cuda") {
  bool have_cuda() {
    if (kernels::cuda_device_count() > 0) return true;
    MESSAGE("skipped: no CUDA device (" << kernels::cuda_unavailable_reason() << ")");
    return false;
  }

  TEST_CASE("every op on the GPU: float64 forward and gradients match PyTorch") {
    if (!have_cuda()) return;
    for (const auto& c : fixture().cases) {
      if (c.dtype != "f64") continue;
      try {
        std::vector<Tensor> in = leaves(c, !c.diff.empty(), Device::cuda);
        Tensor y = run_op(c, in);
        CHECK_MESSAGE(y.device() == Device::cuda, c.name << ": output on " << y.device());
        report(c.name + " forward (cuda)", compare(y, c.out, 1e-12, 1e-10));
        if (c.diff.empty()) continue;
        y.backward(c.r.to(Device::cuda));
        for (int64_t i : c.diff) {
          std::string what = c.name + " grad" + std::to_string(i) + " (cuda)";
          if (!in[i].grad().defined()) {
            FAIL_CHECK(what << ": no gradient reached the input");
            continue;
          }
          CHECK_MESSAGE(in[i].grad().device() == Device::cuda, what << " on " << in[i].grad().device());
          report(what, compare(in[i].grad(), c.grads.at(i), 1e-10, 1e-8));
        }
      } catch (const std::exception& e) {
        FAIL_CHECK(c.name << " on cuda threw: " << std::string(e.what()));
      }
    }
  }

  TEST_CASE("every op on the GPU: float32 forward and gradients match the CPU (atol 1e-6, rtol 1e-5)") {
    if (!have_cuda()) return;
    // Every case, the float64 ones cast to float32 (integer inputs stay as they are).
    auto f32_leaves = [](const Case& c, Device d) {
      std::vector<Tensor> in;
      for (size_t i = 0; i < c.inputs.size(); ++i) {
        Tensor t = c.inputs[i].dtype() == DType::i64 ? c.inputs[i] : c.inputs[i].to(DType::f32);
        t = t.detach().to(d).clone();
        if (std::count(c.diff.begin(), c.diff.end(), int64_t(i))) t.requires_grad_();
        in.push_back(t);
      }
      return in;
    };
    for (const auto& c : fixture().cases) {
      try {
        std::vector<Tensor> cpu_in = f32_leaves(c, Device::cpu), gpu_in = f32_leaves(c, Device::cuda);
        Tensor yc = run_op(c, cpu_in), yg = run_op(c, gpu_in);
        report(c.name + " forward (cuda vs cpu)", compare(yg, yc, 1e-6, 1e-5));
        if (c.diff.empty()) continue;
        Tensor r = c.r.defined() ? c.r.to(DType::f32) : Tensor::ones(yc.shape());
        yc.backward(r);
        yg.backward(r.to(Device::cuda));
        for (int64_t i : c.diff)
          report(c.name + " grad" + std::to_string(i) + " (cuda vs cpu)",
                 compare(gpu_in[i].grad(), cpu_in[i].grad(), 1e-6, 1e-5));
      } catch (const std::exception& e) {
        FAIL_CHECK(c.name << " f32 on cuda threw: " << std::string(e.what()));
      }
    }
  }

  TEST_CASE("gradcheck passes on the GPU for every float64 case") {
    if (!have_cuda()) return;
    for (const auto& c : fixture().cases)
      if (!c.diff.empty() && c.dtype == "f64") check_gradcheck(c, Device::cuda);
  }
}
