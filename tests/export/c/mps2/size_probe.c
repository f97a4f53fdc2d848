/* Flash and RAM of the decoder alone: linked once with pose_decode() called (-DPOSE_PROBE_DECODE)
 * and once without; the difference is the decoder with the library code it pulls in. */
#include "pose_decode.h"

#define POSE_PROBE_WORDS ((POSE_NUM_HEATMAPS + POSE_NUM_PAFS) * POSE_MAP_H * POSE_MAP_W)

int32_t pose_probe_words[POSE_PROBE_WORDS];
pose_person_t pose_probe_people[POSE_MAX_PEOPLE];

int main(int argc, char** argv) {
  (void)argc;
  (void)argv;
#ifdef POSE_PROBE_DECODE
  return pose_decode(pose_probe_words, pose_probe_words + POSE_NUM_HEATMAPS * POSE_MAP_H * POSE_MAP_W,
                     pose_probe_people, POSE_MAX_PEOPLE, 0);
#else
  return (int)pose_probe_words[0] + pose_probe_people[0].count;
#endif
}
