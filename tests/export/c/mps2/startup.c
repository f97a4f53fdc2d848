/* Minimal start-up for the pose harness on QEMU's mps2-an386 (Cortex-M4F): vector table, .data/.bss
 * initialisation, FPU enable, newlib's semihosting (rdimon) stdio, exit through semihosting. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(int argc, char** argv);
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);

void _init(void) {}
void _fini(void) {}

void Reset_Handler(void) {
  uint32_t *s = &_sidata, *d = &_sdata;
  while (d < &_edata) *d++ = *s++;
  for (d = &_sbss; d < &_ebss;) *d++ = 0;
  *(volatile uint32_t*)0xE000ED88 |= 0xFu << 20; /* CPACR: CP10, CP11 full access (FPU) */
  __asm volatile("dsb\n isb");
  initialise_monitor_handles();
  __libc_init_array();
  exit(main(0, 0));
}

static void Fault_Handler(void) {
  for (;;) {
  }
}

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {(void (*)(void))(&_estack),
                                                                                        Reset_Handler,
                                                                                        Fault_Handler,
                                                                                        Fault_Handler,
                                                                                        Fault_Handler,
                                                                                        Fault_Handler,
                                                                                        Fault_Handler,
                                                                                        0,
                                                                                        0,
                                                                                        0,
                                                                                        0,
                                                                                        Fault_Handler,
                                                                                        Fault_Handler,
                                                                                        0,
                                                                                        Fault_Handler,
                                                                                        Fault_Handler};
