// Lab 1: tensors and autograd by hand. A two-layer MLP on Fashion-MNIST built from raw tensors (no nn::Module,
// no optimizer class): the weights are leaf tensors with requires_grad, the loss is built from ops, backward()
// fills .grad, and the SGD update is a loop under NoGradGuard.
//
//   ./build/ex_autograd_mlp [TRAIN_IMAGES=60000] [EPOCHS=3]
//
// What to look for: the loss printed each epoch falls, and the test accuracy ends near 87% with the
// defaults. Change the hidden width, the learning rate or the initialization and watch what happens.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/autograd.h"
#include "core/ops.h"
#include "data/idx.h"
#include "data/loader.h"

using namespace spdlab;

int main(int argc, char** argv) {
  const int64_t n_train = argc > 1 ? std::atoll(argv[1]) : 60000, epochs = argc > 2 ? std::atoll(argv[2]) : 3;
  const data::Dataset train = data::subset(data::load_fashion_mnist(data::kFashionMnistRoot, true), 0, n_train);
  const data::Dataset test = data::subset(data::load_fashion_mnist(data::kFashionMnistRoot, false), 0, 2000);

  // The parameters: leaves that require grad. He initialization: N(0, 2 / fan_in).
  const int64_t in = 28 * 28, hidden = 128, classes = 10;
  Generator gen(0);
  Tensor W1 = (Tensor::randn({in, hidden}, gen) * std::sqrt(2.0 / in)).requires_grad_(true);
  Tensor b1 = Tensor::zeros({hidden}).requires_grad_(true);
  Tensor W2 = (Tensor::randn({hidden, classes}, gen) * std::sqrt(2.0 / hidden)).requires_grad_(true);
  Tensor b2 = Tensor::zeros({classes}).requires_grad_(true);
  auto model = [&](const Tensor& x) {  // x [B, 1, 28, 28] -> logits [B, 10]
    Tensor h = relu(x.reshape({x.size(0), in}).matmul(W1) + b1);
    return h.matmul(W2) + b2;
  };

  const double lr = 0.1;
  data::BatchLoader loader(train, {.batch_size = 64, .shuffle = true, .seed = 0});
  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    loader.start_epoch(epoch);
    data::Batch b;
    double loss_sum = 0;
    int64_t batches = 0;
    while (loader.next(b)) {
      Tensor loss = cross_entropy(model(b.x), b.y);  // records the graph: matmul, add, relu, ...
      for (Tensor* p : {&W1, &b1, &W2, &b2}) p->zero_grad();
      loss.backward();                              // walks it backwards and fills p.grad()
      {
        autograd::NoGradGuard no_grad;              // the update itself is not part of any graph
        for (Tensor* p : {&W1, &b1, &W2, &b2}) p->copy_(*p - p->grad() * lr);
      }
      loss_sum += loss.item();
      ++batches;
    }
    std::printf("epoch %lld: mean training loss %.4f\n", static_cast<long long>(epoch), loss_sum / batches);
  }

  autograd::NoGradGuard no_grad;
  const Tensor pred = argmax(model(test.images), 1);
  int64_t correct = 0;
  for (int64_t i = 0; i < test.size(); ++i) correct += pred.data<int64_t>()[i] == test.labels.data<int64_t>()[i];
  std::printf("test accuracy on %lld images: %.1f%%\n", static_cast<long long>(test.size()), 100.0 * correct / test.size());
  return 0;
}
