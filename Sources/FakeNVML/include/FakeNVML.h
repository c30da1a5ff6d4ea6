/*
 * FakeNVML: a shared library (libFakeNVML.so) that exports the NVML symbols gpuplane's
 * node-agent resolves with dlsym, with GPUs read from a file and events injected by appending
 * lines to another. It stands in for NVIDIA hardware in tests and GPU-less demos only.
 *
 * Load it exactly like the real library:
 *     GPUPLANE_NVML_LIBRARY=.build/debug/libFakeNVML.so gpuplane-node-agent ...
 *
 * Where its files come from, read once at the first nvmlInit_v2 / nvmlInitWithFlags:
 *   1. the paths given to fakeNVMLConfigure() (tests: one private copy of the library each);
 *   2. otherwise the environment: GPUPLANE_FAKE_NVML_CONFIG and GPUPLANE_FAKE_NVML_EVENTS;
 *   3. otherwise zero GPUs and no events.
 * A configured config file that is missing makes init fail with NVML_ERROR_DRIVER_NOT_LOADED;
 * a malformed one with NVML_ERROR_UNKNOWN (and a message on stderr).
 *
 * Config file: one directive a line; blank lines and lines starting with '#' are ignored;
 * values with spaces are double-quoted.
 *     driver 550.54.15
 *     gpu index=0 uuid=GPU-6f1c... name="NVIDIA H100 80GB HBM3" memory_mib=81559 \
 *         memory_used_mib=0 temp=40 power_mw=70000 util=0 mem_util=0 pci=0000:01:00.0 ecc=1
 *   `gpu` keys (all optional): index (must equal the line's position among gpu lines),
 *   uuid, name, memory_mib, memory_used_mib, temp (°C), power_mw, util and mem_util (percent),
 *   pci (domain:bus:device.function, hex), pci_device_id (hex), ecc (1 = ECC counters and ECC
 *   events supported, the default; 0 = NVML_ERROR_NOT_SUPPORTED), ecc_events (0 = ECC counters
 *   without ECC events, as on boards that only count). At most 64 GPUs.
 *
 * Events file: appended to while the library runs; read from its start at init and then
 * followed. Every NVML call picks up complete new lines; nvmlEventSetWait_v2 polls the file
 * every 10 ms until its timeout. One event a line:
 *     xid <index|*> <code>          XID critical error (`*`: an event with a NULL device)
 *     ecc <index> single|double     ECC error event; also bumps the volatile and aggregate
 *                                   corrected/uncorrected counters
 *     lost [<index>]                the GPU (or every GPU) falls off the bus: its calls, and
 *                                   event waits on sets it is registered in, return
 *                                   NVML_ERROR_GPU_IS_LOST
 *     found [<index>]               the GPU (or every GPU) answers again
 *     set <index> key=value ...     new telemetry: temp, power_mw, util, mem_util,
 *                                   memory_used_mib
 * Events reach only the event sets registered for that device and event type at the time the
 * line is read. Lines are at most 2047 bytes; write each with one append so no reader sees half.
 *
 * Every entry point takes one process-wide lock: the library is thread-safe. A process that
 * needs several independent fakes loads several copies of the file (the dynamic loader keeps
 * one instance per file).
 */
#ifndef GPUPLANE_FAKENVML_H
#define GPUPLANE_FAKENVML_H

#include "CNVML.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Names this instance's config and events files, overriding the environment. Call it (through
 * dlsym on the loaded copy) before the first nvmlInit_v2; either path may be NULL. Not part of
 * NVML: NVIDIA's library has no such symbol.
 */
nvmlReturn_t fakeNVMLConfigure(const char *configPath, const char *eventsPath);

#ifdef __cplusplus
}
#endif

#endif /* GPUPLANE_FAKENVML_H */
