/* import_pages.c - the emulator's own page rate for the import benchmark: fetches
 * GET /admin/v1/users pages of LIMIT users in a loop through the project's Duo client
 * (signing, HTTPS keep-alive, JSON decode: what an import worker does per page, without
 * the broker or the database). Pages are taken round robin from [0, TOTAL) starting at
 * FIRST_PAGE, so several copies can run side by side on different pages.
 *
 * usage: import_pages HOST IKEY SKEY SECONDS [LIMIT [TOTAL [FIRST_PAGE]]]
 * DUO_CA_FILE from the environment. Prints "pages=N users=U secs=S cpu=C pages/s=R"
 * (cpu: this client's own user + system seconds).
 * Exit 0 when at least one page came back, 1 otherwise. */
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <time.h>

#include "duo.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long long arg(int argc, char **argv, int i, long long dflt)
{
    return argc > i ? strtoll(argv[i], NULL, 10) : dflt;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: import_pages HOST IKEY SKEY SECONDS [LIMIT [TOTAL [FIRST]]]\n");
        return 1;
    }
    double secs = (double)arg(argc, argv, 4, 10);
    int limit = (int)arg(argc, argv, 5, 300);
    long long total = arg(argc, argv, 6, 1000000), page = arg(argc, argv, 7, 0);
    long long npages = total / limit > 0 ? total / limit : 1;
    duo_client_opts o;
    duo_client_opts_default(&o);
    o.host = argv[1];
    o.ikey = argv[2];
    o.skey = argv[3];
    o.retry_attempts = 1;
    err_t e = {0};
    duo_client *c = duo_client_new(&o, &e);
    if (!c) {
        fprintf(stderr, "import_pages: %s\n", e.msg);
        return 1;
    }
    long long pages = 0, users = 0;
    double t0 = now_s(), t = t0;
    while (t - t0 < secs) {
        duo_users_page p = {0};
        duo_error de = {0};
        if (duo_admin_users_page(c, limit, (page % npages) * limit, &p, &de) < 0) {
            fprintf(stderr, "import_pages: %s\n", de.message);
            break;
        }
        users += (long long)json_array_size(p.users);
        duo_users_page_free(&p);
        pages++;
        page++;
        t = now_s();
    }
    duo_client_free(c);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("pages=%lld users=%lld secs=%.2f cpu=%.2f pages/s=%.1f\n", pages, users, t - t0, cpu,
           pages / (t - t0 > 0 ? t - t0 : 1));
    return pages > 0 ? 0 : 1;
}
