/* The functions of ai8xize's generated cnn.h that firmware/main.c calls (host compile check). */
#ifndef POSEKD_TEST_CNN_H
#define POSEKD_TEST_CNN_H
#include <stdint.h>
int cnn_enable(uint32_t clock_source, uint32_t clock_divider);
int cnn_disable(void);
int cnn_init(void);
int cnn_load_weights(void);
int cnn_load_bias(void);
int cnn_configure(void);
int cnn_start(void);
int cnn_unload(uint32_t* out_buf);
#endif
