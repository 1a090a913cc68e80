/* Preloaded into the Python that runs scripts/emulate_kernel.py. bochscpu-python's wheel is
 * built against glibc 2.38, whose C23 names of strtoull and sscanf older glibcs lack; and its
 * CPU model is Bochs's default, Tiger Lake, which has AVX-512 but not AVX512_BF16. Defines the
 * two names, and makes the "model" parameter Bochs's Sapphire Rapids (index 30 of Bochs's
 * cpudb.h; the wheel's own list of choices stops at Tiger Lake, so it is replaced by one long
 * enough for that index). The emulator script checks the model runs vdpbf16ps. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unsigned long long __isoc23_strtoull(const char *s, char **end, int base) {
    return strtoull(s, end, base);
}

int __isoc23_sscanf(const char *s, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int n = vsscanf(s, format, args);
    va_end(args);
    return n;
}

static const char *bochscpu_path;

static int find_bochscpu(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    if (info->dlpi_name && strstr(info->dlpi_name, "_bochscpu")) {
        bochscpu_path = info->dlpi_name;
        return 1;
    }
    return 0;
}

enum { SAPPHIRE_RAPIDS = 30, CHOICES = 32 };

void *sim_new_param_enum(const char *name, const char **choices, unsigned index) {
    dl_iterate_phdr(find_bochscpu, NULL);
    void *lib = bochscpu_path ? dlopen(bochscpu_path, RTLD_NOLOAD | RTLD_LAZY) : NULL;
    void *(*real)(const char *, const char **, unsigned) =
        lib ? (void *(*)(const char *, const char **, unsigned))dlsym(lib, "sim_new_param_enum") : NULL;
    if (!real) {
        fprintf(stderr, "bochs_shim: bochscpu's sim_new_param_enum not found\n");
        abort();
    }
    if (strcmp(name, "model") == 0) {
        static const char *models[CHOICES + 1];
        for (int i = 0; i < CHOICES; i++)
            models[i] = "model";
        models[CHOICES] = NULL;
        return real(name, models, SAPPHIRE_RAPIDS);
    }
    return real(name, choices, index);
}
