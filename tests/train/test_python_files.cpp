// Files written by the Python originals: a seed checkpoint (torch.save of {'batch','model',
// 'optimizer','loss','best_loss'} with an OrderedDict state) resumes, and the teacher repo's
// prepared_train_annotation.pkl trains. Both are generated here with Debian's python3.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "posekd/ai8x/state_dict.h"
#include "posekd/io/torch_file.h"
#include "posekd/model/student.h"
#include "posekd/train/adam_state.h"
#include "posekd/train/checkpoint.h"
#include "posekd/train/trainer.h"
#include "test_util.h"

using posekd::testing::read_text;

namespace fs = std::filesystem;
using namespace posekd::train;

namespace {

// Debian's python3 (python3-torch lives there, not in a pyenv python3 that may come first on PATH).
bool python_has(const std::string& module) {
  const std::string cmd = "/usr/bin/python3 -c 'import " + module + "' >/dev/null 2>&1";
  return fs::exists("/usr/bin/python3") && std::system(cmd.c_str()) == 0;
}

int run_python(const fs::path& dir, const std::string& script) {
  std::ofstream(dir / "script.py") << script;
  const std::string cmd = "cd '" + dir.string() + "' && /usr/bin/python3 script.py > py.log 2>&1";
  return std::system(cmd.c_str());
}

// A double as Python source text that reads back exactly.
std::string fmt_double(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string shape_tuple(const torch::Tensor& t) {
  std::string s = "(";
  for (auto d : t.sizes()) s += std::to_string(d) + ", ";
  return s + ")";
}

}  // namespace

TEST(PythonFiles, ASeedCheckpointWrittenByPythonResumesWeightsAdamStateAndBatch) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  if (!python_has("torch")) GTEST_SKIP() << "/usr/bin/python3 with torch (Debian python3-torch) is not installed";
  auto dir = posekd::testing::temp_dir("seedckpt");
  // The seed student's float state (seeded weights, BN included), as the Python side starts from it.
  const fs::path student = dir / "student_float.pt";
  {
    torch::manual_seed(5);
    auto fresh = posekd::model::make_student("seed");
    auto root = posekd::io::Value::dict();
    root.set("state_dict", posekd::io::to_value(posekd::ai8x::state_dict(*fresh)));
    posekd::io::save_torch_file(student.string(), root);
  }
  const std::string script = R"(
import collections, torch
sd = torch.load(')" + student.string() +
                             R"(')['state_dict']
buffers = ('running_mean', 'running_var', 'num_batches_tracked')
trainable = ('op.weight', 'op.bias', 'bn.weight', 'bn.bias')
params = collections.OrderedDict()
for k, v in sd.items():
    if not k.endswith(buffers):
        params[k] = torch.nn.Parameter(v.clone(), requires_grad=k.endswith(trainable))
opt = torch.optim.Adam(list(params.values()), lr=1e-3)   # model.parameters() order, ai8x scalars included
for step in range(2):
    opt.zero_grad()
    sum((p * p).sum() for p in params.values() if p.requires_grad).backward()
    opt.step()
model = collections.OrderedDict((k, params[k].detach() if k in params else v) for k, v in sd.items())
torch.save({'batch': 200, 'model': model, 'optimizer': opt.state_dict(), 'loss': 1.5, 'best_loss': 1.25}, 'seed.pth')
w = params['conv1.op.weight']
torch.save({'weight': w.detach(), 'exp_avg': opt.state[w]['exp_avg'], 'exp_avg_sq': opt.state[w]['exp_avg_sq']},
           'expect.pt')
)";
  ASSERT_EQ(run_python(dir, script), 0) << read_text(dir / "py.log");

  auto ck = load_checkpoint((dir / "seed.pth").string());
  EXPECT_EQ(ck.batch, 200);
  EXPECT_FALSE(ck.has_extras);
  EXPECT_DOUBLE_EQ(ck.best_loss, 1.25);
  auto s = posekd::model::make_student("seed");
  posekd::ai8x::load_state_dict(*s, ck.model, true, "seed.pth");
  auto params = s->parameters();
  torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-3));
  restore_adam(opt, params, ck.optimizer, "seed.pth");
  auto snap = snapshot_adam(opt, params);
  // conv1.op.weight is parameter 9 (after the nine ai8x scalars), as in Python's numbering
  auto expect = posekd::io::load_torch_file((dir / "expect.pt").string());
  EXPECT_TRUE(torch::equal(s->named_parameters()["conv1.op.weight"], expect.at("weight").as_tensor()));
  ASSERT_EQ(snap.state.count(9), 1u);
  EXPECT_EQ(snap.state.at(9).step, 2);
  EXPECT_TRUE(torch::equal(snap.state.at(9).exp_avg, expect.at("exp_avg").as_tensor()));
  EXPECT_TRUE(torch::equal(snap.state.at(9).exp_avg_sq, expect.at("exp_avg_sq").as_tensor()));
  EXPECT_EQ(snap.state.count(0), 0u);  // ai8x scalars have no state, as in Python

  // posekd train --checkpoint seed.pth continues at batch 200
  TrainConfig c;
  c.ann = (coco / "annotations" / "person_keypoints_val2017.json").string();
  c.images = (coco / "val2017").string();
  c.output = (dir / "run").string();
  c.checkpoint = (dir / "seed.pth").string();
  c.no_qat = true;
  c.batch_size = 2;
  c.total_batches = 201;
  c.threads = 2;
  c.quiet = true;
  auto r = run_training(c);
  EXPECT_EQ(r.batches_run, 1);
  EXPECT_EQ(r.batches_done, 201);
  EXPECT_NE(read_text(dir / "run" / "log.txt").find("Resumed at batch 200"), std::string::npos);
  fs::remove_all(dir);
}

TEST(PythonFiles, TrainsFromThePreparedAnnotationPickle) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  if (!python_has("pickle")) GTEST_SKIP() << "/usr/bin/python3 is not installed";
  auto dir = posekd::testing::temp_dir("prepared");
  // prepare_train_labels.py's record layout (openpose.md 2.3), from the sample's JSON
  const std::string script = R"(
import json, pickle
j = json.load(open(')" + (coco / "annotations" / "person_keypoints_val2017.json").string() +
                             R"('))
imgs = {i['id']: i for i in j['images']}
remap = {0: 2, 1: 0, 2: 1}
def rec(a):
    k = a['keypoints']
    return {'objpos': [a['bbox'][0] + a['bbox'][2] / 2, a['bbox'][1] + a['bbox'][3] / 2], 'bbox': a['bbox'],
            'segment_area': a['area'], 'scale_provided': a['bbox'][3] / 368, 'num_keypoints': a['num_keypoints'],
            'keypoints': [[k[3 * i], k[3 * i + 1], remap[k[3 * i + 2]]] for i in range(17)]}
people = [a for a in j['annotations'] if a['num_keypoints'] > 0 and not a['iscrowd']]
out = []
for a in people:
    d = rec(a)
    im = imgs[a['image_id']]
    d.update({'img_paths': im['file_name'], 'img_width': im['width'], 'img_height': im['height'],
              'image_id': a['image_id'], 'segmentations': [],
              'processed_other_annotations': [rec(o) for o in people if o['image_id'] == a['image_id'] and o is not a]})
    out.append(d)
pickle.dump(out, open('prepared_train_annotation.pkl', 'wb'))
print(len(out))
)";
  ASSERT_EQ(run_python(dir, script), 0) << read_text(dir / "py.log");
  TrainConfig c;
  c.prepared = (dir / "prepared_train_annotation.pkl").string();
  c.images = (coco / "val2017").string();
  c.output = (dir / "run").string();
  c.arch = "ai85pose";
  c.no_qat = true;
  c.batch_size = 2;
  c.total_batches = 2;
  c.threads = 2;
  c.quiet = true;
  auto r = run_training(c);
  EXPECT_EQ(r.batches_done, 2);
  std::string log = read_text(dir / "run" / "log.txt");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex(R"(Data: \S+ \((\d+) images, (\d+) persons)"))) << log;
  EXPECT_EQ(m[1], "4");
  EXPECT_GE(std::stoi(m[2]), 4);
  fs::remove_all(dir);
}

// The other direction: a latest.pth written by a real posekd training run (float scalars loss /
// best_loss, the Adam state, posekd's extras) loads in Python's torch.load, as the seed's own
// checkpoints do, and holds what the C++ side reads back.
TEST(PythonFiles, PythonLoadsALatestPthWrittenByTraining) {
  POSEKD_REQUIRE_FIXTURE(coco, "coco-sample");
  if (!python_has("torch")) GTEST_SKIP() << "/usr/bin/python3 with torch (Debian python3-torch) is not installed";
  auto dir = posekd::testing::temp_dir("latestpy");
  TrainConfig c;
  c.ann = (coco / "annotations" / "person_keypoints_val2017.json").string();
  c.images = (coco / "val2017").string();
  c.output = (dir / "run").string();
  c.arch = "ai85pose";
  c.no_qat = true;
  c.batch_size = 2;
  c.total_batches = 2;
  c.save_every = 1;
  c.threads = 2;
  c.quiet = true;
  c.no_plot = true;
  run_training(c);
  const fs::path latest = dir / "run" / "latest.pth";
  ASSERT_TRUE(fs::exists(latest));
  const auto ck = load_checkpoint(latest.string());
  ASSERT_EQ(ck.batch, 2);
  ASSERT_TRUE(std::isfinite(ck.loss));
  const auto& w = posekd::ai8x::find(ck.model, "conv1.op.weight", "latest.pth");
  const std::string script = R"(
import torch
d = torch.load(')" + latest.string() +
                             R"(')
assert type(d) is dict, type(d)
for k in ('batch', 'model', 'optimizer', 'loss', 'best_loss', 'posekd'):
    assert k in d, k
assert d['batch'] == 2, d['batch']
assert type(d['loss']) is float and type(d['best_loss']) is float, (type(d['loss']), type(d['best_loss']))
assert abs(d['loss'] - )" + fmt_double(ck.loss) +
                             R"() <= 1e-12 * max(1.0, abs(d['loss'])), d['loss']
sd = d['model']
assert len(sd) == )" + std::to_string(ck.model.size()) +
                             R"(, len(sd)
w = sd['conv1.op.weight']
assert tuple(w.shape) == )" + shape_tuple(w) +
                             R"(, w.shape
assert abs(float(w.double().sum()) - )" +
                             fmt_double(w.to(torch::kDouble).sum().item<double>()) + R"() < 1e-9
opt = d['optimizer']
assert len(opt['param_groups']) == 1 and opt['param_groups'][0]['lr'] > 0
steps = {int(s['step']) for s in opt['state'].values()}
assert steps == {2}, steps
print('latest ok', d['loss'])
)";
  ASSERT_EQ(run_python(dir, script), 0) << read_text(dir / "py.log");
  EXPECT_NE(read_text(dir / "py.log").find("latest ok"), std::string::npos);
  fs::remove_all(dir);
}
