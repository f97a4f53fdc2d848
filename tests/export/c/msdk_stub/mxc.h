/* Declarations of the MSDK names firmware/main.c uses, for a compile check on the host
 * (tests/export/test_pose_c.cpp). Not the SDK: signatures as in the MAX78000 MSDK. */
#ifndef POSEKD_TEST_MXC_H
#define POSEKD_TEST_MXC_H
#include <stdint.h>
#define MXC_ICC0 ((void*)0)
#define MXC_SYS_CLOCK_IPO 0
#define MXC_S_GCR_PCLKDIV_CNNCLKSEL_PCLK 0u
#define MXC_S_GCR_PCLKDIV_CNNCLKDIV_DIV1 0u
#define CoreDebug_DEMCR_TRCENA_Msk (1u << 24)
#define DWT_CTRL_CYCCNTENA_Msk 1u
typedef struct {
  volatile uint32_t DEMCR;
} CoreDebug_Type;
typedef struct {
  volatile uint32_t CTRL, CYCCNT;
} DWT_Type;
extern CoreDebug_Type* CoreDebug;
extern DWT_Type* DWT;
extern uint32_t SystemCoreClock;
void MXC_ICC_Enable(void* icc);
int MXC_SYS_Clock_Select(int clock);
void SystemCoreClockUpdate(void);
void MXC_LP_EnterSleepMode(void);
#endif
