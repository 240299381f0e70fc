/*
 * config: mtlslb_config_parse_text() then mtlslb_config_free().
 *
 * Server addresses are numeric only (mtlslb_config_numeric(1)): no DNS.
 * The parser opens no file (the TLS layer loads them later), so the paths
 * in the input are only strings.  Properties: the result and *out agree,
 * every report is one "NAME:LINE: ..." line, and a model that parsed is
 * complete (every index resolved, every name and path set, relative paths
 * joined with the configuration's directory).
 */
#include "fuzz.h"

#include <sys/socket.h>

struct rep {
    const char *name;
    unsigned count;
};

static void report(void *arg, const char *msg)
{
    struct rep *r = arg;
    size_t nl = strlen(r->name);

    r->count++;
    CHECK(strlen(msg) < 1200);
    CHECK(strchr(msg, '\n') == NULL);
    CHECK(strncmp(msg, r->name, nl) == 0 && msg[nl] == ':');
}

static void check_path(const struct mtlslb_file *f, int absolute)
{
    CHECK(f->path != NULL);
    CHECK(!absolute || f->path[0] == '/');
    CHECK(f->line > 0);
}

static void check_model(const struct mtlslb_config *c, int absolute)
{
    size_t i, j;

    CHECK(c->nlisteners > 0);
    CHECK(c->global.workers >= 1 && c->global.workers <= MTLSLB_MAX_WORKERS);
    CHECK(c->global.max_conns >= 1);
    CHECK(c->global.tmo_handshake && c->global.tmo_connect && c->global.tmo_idle &&
          c->global.tmo_request);
    CHECK(c->global.stats.addrlen == 0 || c->global.stats.text);
    for (i = 0; i < c->nlisteners; i++) {
        const struct mtlslb_listener *l = &c->listeners[i];
        CHECK(l->name && l->name[0] && strlen(l->name) < MTLSLB_MAX_NAME);
        CHECK(l->nbinds > 0);
        for (j = 0; j < l->nbinds; j++) {
            CHECK(l->binds[j].text);
            CHECK(l->binds[j].addrlen > 0 &&
                  l->binds[j].addrlen <= sizeof(struct sockaddr_storage));
        }
        check_path(&l->cert, absolute);
        check_path(&l->key, absolute);
        if (l->ca.path)
            check_path(&l->ca, absolute);
        for (j = 0; j < l->ncrls; j++)
            check_path(&l->crls[j], absolute);
        CHECK(!l->ncrls || l->ca.path);
        CHECK(l->verify != MTLSLB_VERIFY_UNSET);
        CHECK(l->verify == MTLSLB_VERIFY_NONE || l->ca.path);
        CHECK(l->tls_min == 12 || l->tls_min == 13);
        CHECK(l->send_proxy >= 0 && l->send_proxy <= 2);
        CHECK(l->mode == MTLSLB_MODE_HTTP || (!l->nroutes && !l->forward_cert));
        CHECK(l->default_backend);
        CHECK(l->backend < c->nbackends);
        CHECK(strcmp(c->backends[l->backend].name, l->default_backend) == 0);
        for (j = 0; j < l->nsnis; j++) {
            const struct mtlslb_sni *s = &l->snis[j];
            size_t k;
            CHECK(s->name != NULL);
            for (k = 0; s->name[k]; k++)
                CHECK(!(s->name[k] >= 'A' && s->name[k] <= 'Z'));
            check_path(&s->cert, absolute);
            check_path(&s->key, absolute);
            if (s->ca.path)
                check_path(&s->ca, absolute);
            for (k = 0; k < s->ncrls; k++)
                check_path(&s->crls[k], absolute);
        }
        for (j = 0; j < l->nroutes; j++) {
            const struct mtlslb_route *r = &l->routes[j];
            CHECK(r->backend_name);
            CHECK(r->backend < c->nbackends);
            CHECK(strcmp(c->backends[r->backend].name, r->backend_name) == 0);
            CHECK(!r->path || r->path[0] == '/');
        }
    }
    for (i = 0; i < c->nbackends; i++) {
        const struct mtlslb_backend *b = &c->backends[i];
        CHECK(b->name && b->name[0] && strlen(b->name) < MTLSLB_MAX_NAME);
        CHECK(b->nservers > 0);
        CHECK(b->check_interval > 0 && b->check_timeout > 0);
        CHECK(b->rise >= 1 && b->rise <= 100 && b->fall >= 1 && b->fall <= 100);
        CHECK(b->retries <= 100);
        CHECK(b->check != MTLSLB_CHECK_HTTP || (b->check_method && b->check_path &&
                                                b->check_path[0] == '/'));
        for (j = 0; j < b->nservers; j++) {
            const struct mtlslb_server *s = &b->servers[j];
            CHECK(s->name && s->addr_text);
            CHECK(s->addrlen > 0 && s->addrlen <= sizeof(struct sockaddr_storage));
            CHECK(s->weight >= 1 && s->weight <= 256);
            if (s->tls_ca.path)
                check_path(&s->tls_ca, absolute);
            CHECK(!s->tls_cert.path == !s->tls_key.path);
            if (s->tls_cert.path) {
                check_path(&s->tls_cert, absolute);
                check_path(&s->tls_key, absolute);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The name it is parsed as: in a directory, at the root, or bare
     * (relative paths stay relative).  None of them exists. */
    static const char *const names[] = { "/nonexistent-mtlslb-fuzz/dir/fuzz.conf",
                                         "/fuzz.conf", "fuzz.conf" };
    const char *name = names[size % 3];
    struct mtlslb_config *cfg = (void *)1;
    struct rep r = { name, 0 };
    char *text = fz_copy(data, size);
    int rc;

    mtlslb_config_numeric(1);
    rc = mtlslb_config_parse_text(name, text, size, &cfg, report, &r);
    CHECK(rc >= 0);
    CHECK((unsigned)rc == r.count);
    if (rc == 0) {
        CHECK(cfg != NULL);
        CHECK(cfg->file && strcmp(cfg->file, name) == 0);
        check_model(cfg, name[0] == '/');
        mtlslb_config_free(cfg);
    } else {
        CHECK(cfg == NULL);
    }
    free(text);
    return 0;
}
