/* A fake libnvidia-ml.so.1 for the tests: the NVML calls sshdeploy's GPU probe makes
 * (sshdeploy/remote/gpus.py), answered from an inventory file, one GPU per line:
 *     UUID,NAME,TOTAL_MIB,USED_MIB[,PID:USED_MIB ...]
 * ($SSHDEPLOY_FAKE_GPUS, else gpus.txt beside this library; the fake nvidia-smi reads
 * the same file). No inventory: nvmlInit fails as without a driver.
 *
 *     gcc -shared -fPIC -o libnvidia-ml.so.1 fake_nvml.c
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GPUS 16
#define MAX_PROCS 16
#define MIB (1024ULL * 1024ULL)

typedef int nvmlReturn_t;
enum { OK = 0, INVALID_ARGUMENT = 2, DRIVER_NOT_LOADED = 9, INSUFFICIENT_SIZE = 7 };

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
/* nvmlProcessInfo_v2_t: what ..._v3 fills without nvmlDeviceGetConfComputeMemSizeInfo */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

struct gpu {
    char uuid[96], name[96];
    unsigned long long total, used;
    unsigned int nproc, pids[MAX_PROCS];
    unsigned long long mem[MAX_PROCS];
};

static struct gpu gpus[MAX_GPUS];
static unsigned int ngpus;

static int load(void) {
    char path[4096];
    const char *env = getenv("SSHDEPLOY_FAKE_GPUS");
    if (env != NULL) {
        snprintf(path, sizeof path, "%s", env);
    } else {
        Dl_info info;
        char self[4096];
        if (!dladdr((void *)load, &info) || info.dli_fname == NULL) return -1;
        snprintf(self, sizeof self, "%s", info.dli_fname);
        snprintf(path, sizeof path, "%s/gpus.txt", dirname(self));
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    char line[1024];
    ngpus = 0;
    while (ngpus < MAX_GPUS && fgets(line, sizeof line, f) != NULL) {
        struct gpu *g = &gpus[ngpus];
        memset(g, 0, sizeof *g);
        char *save = NULL, *field = strtok_r(line, ",\n", &save);
        if (field == NULL) continue;
        snprintf(g->uuid, sizeof g->uuid, "%s", field);
        if ((field = strtok_r(NULL, ",\n", &save)) == NULL) continue;
        snprintf(g->name, sizeof g->name, "%s", field);
        if ((field = strtok_r(NULL, ",\n", &save)) == NULL) continue;
        g->total = strtoull(field, NULL, 10) * MIB;
        if ((field = strtok_r(NULL, ",\n", &save)) == NULL) continue;
        g->used = strtoull(field, NULL, 10) * MIB;
        while (g->nproc < MAX_PROCS && (field = strtok_r(NULL, ",\n", &save)) != NULL) {
            char *colon = strchr(field, ':');
            g->pids[g->nproc] = (unsigned int)strtoul(field, NULL, 10);
            g->mem[g->nproc] = colon ? strtoull(colon + 1, NULL, 10) * MIB : 0;
            g->nproc++;
        }
        ngpus++;
    }
    fclose(f);
    return 0;
}

nvmlReturn_t nvmlInit_v2(void) { return load() == 0 ? OK : DRIVER_NOT_LOADED; }
nvmlReturn_t nvmlShutdown(void) { return OK; }

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    *count = ngpus;
    return OK;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device) {
    if (index >= ngpus) return INVALID_ARGUMENT;
    *device = &gpus[index];
    return OK;
}

nvmlReturn_t nvmlDeviceGetUUID(void *device, char *uuid, unsigned int length) {
    snprintf(uuid, length, "%s", ((struct gpu *)device)->uuid);
    return OK;
}

nvmlReturn_t nvmlDeviceGetName(void *device, char *name, unsigned int length) {
    snprintf(name, length, "%s", ((struct gpu *)device)->name);
    return OK;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(void *device, nvmlMemory_t *memory) {
    struct gpu *g = device;
    memory->total = g->total;
    memory->used = g->used;
    memory->free = g->total - g->used;
    return OK;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *device, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    struct gpu *g = device;
    if (*count < g->nproc || infos == NULL) {
        unsigned int needed = g->nproc;
        *count = needed;
        return needed ? INSUFFICIENT_SIZE : OK;
    }
    for (unsigned int i = 0; i < g->nproc; i++) {
        infos[i].pid = g->pids[i];
        infos[i].usedGpuMemory = g->mem[i];
        infos[i].gpuInstanceId = infos[i].computeInstanceId = 0xFFFFFFFF;
    }
    *count = g->nproc;
    return OK;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    return result == DRIVER_NOT_LOADED ? "Driver Not Loaded" : "Unknown Error";
}
