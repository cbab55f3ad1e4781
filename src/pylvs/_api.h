/* _api.h — the functions Python calls through cffi (mirrors _core.cdef). */
#ifndef PYLVS_API_H
#define PYLVS_API_H
#include "_core.h"
#endif
