package io.kvquant.demo.store;

import io.kvquant.persist.BlockStore;
import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import redis.clients.jedis.DefaultJedisClientConfig;
import redis.clients.jedis.HostAndPort;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.exceptions.JedisException;

/**
 * Prefix blocks in Redis (or Valkey), one string value per block under {@code kvq:blk:<key>}.
 * URLs: {@code redis://[user:password@]host[:port][/db]}, {@code rediss://...} for TLS. Eviction is
 * the server's (set {@code maxmemory} and an LRU {@code maxmemory-policy}). Every failure is an
 * IOException whose message names the server without credentials.
 */
public final class RedisBlockStore implements BlockStore {

    static final String PREFIX = "kvq:blk:";
    private final Jedis jedis;
    private final String where;
    private final String password;

    private RedisBlockStore(Jedis jedis, String where, String password) {
        this.jedis = jedis;
        this.where = where;
        this.password = password;
    }

    /** True if {@code spec} is a Redis URL. */
    public static boolean isUrl(String spec) {
        return spec.startsWith("redis://") || spec.startsWith("rediss://");
    }

    /** Parsed URL parts; {@code toString()} never shows the password. */
    record Url(boolean tls, String user, String password, String host, int port, int db) {
        static Url parse(String spec) {
            URI u;
            try {
                u = new URI(spec);
            } catch (URISyntaxException e) {
                throw new IllegalArgumentException("cannot read the Redis URL " + redact(spec)
                        + " (expected redis://[user:password@]host[:port][/db] or rediss://...)");
            }
            if (u.getHost() == null) {
                throw new IllegalArgumentException("the Redis URL " + redact(spec) + " names no host");
            }
            String user = null;
            String pass = null;
            String info = u.getRawUserInfo();
            if (info != null) {
                int c = info.indexOf(':');
                user = URLDecoder.decode(c < 0 ? info : info.substring(0, c), StandardCharsets.UTF_8);
                pass = c < 0 ? null : URLDecoder.decode(info.substring(c + 1), StandardCharsets.UTF_8);
                if (c >= 0 && user.isEmpty()) {
                    user = null;  // redis://:password@host: AUTH password (default user)
                }
                if (c < 0) {       // redis://password@host is read as a password, as redis-cli does
                    pass = user;
                    user = null;
                }
            }
            int db = 0;
            String path = u.getPath();
            if (path != null && path.length() > 1) {
                try {
                    db = Integer.parseInt(path.substring(1));
                } catch (NumberFormatException e) {
                    throw new IllegalArgumentException("the Redis URL " + redact(spec) + " has a database that is not a number");
                }
            }
            return new Url(spec.startsWith("rediss://"), user, pass, u.getHost(), u.getPort() < 0 ? 6379 : u.getPort(), db);
        }

        @Override
        public String toString() {
            return (tls ? "rediss://" : "redis://") + (user != null ? user + (password != null ? ":***" : "") + "@"
                    : password != null ? ":***@" : "") + host + ":" + port + (db != 0 ? "/" + db : "");
        }
    }

    /** A URL with whatever sits between "://" and "@" masked (for messages about unparseable URLs). */
    static String redact(String spec) {
        return spec.replaceAll("(://)[^@/]*@", "$1***@");
    }

    /**
     * Connects to {@code url} and checks the connection with PING.
     *
     * @throws IOException (unreachable, timed out, refused credentials) with a message without the password
     */
    public static RedisBlockStore connect(String url, int timeoutMillis) throws IOException {
        Url u = Url.parse(url);
        DefaultJedisClientConfig.Builder cfg = DefaultJedisClientConfig.builder().connectionTimeoutMillis(timeoutMillis)
                .socketTimeoutMillis(timeoutMillis).database(u.db()).ssl(u.tls()).clientName("kvq");
        if (u.user() != null) {
            cfg.user(u.user());
        }
        if (u.password() != null) {
            cfg.password(u.password());
        }
        Jedis j = null;
        try {
            j = new Jedis(new HostAndPort(u.host(), u.port()), cfg.build());
            j.ping();
            return new RedisBlockStore(j, u.toString(), u.password());
        } catch (JedisException | IllegalStateException e) {
            if (j != null) {
                try {
                    j.close();
                } catch (RuntimeException ignored) {
                    // the connection failed anyway
                }
            }
            throw new IOException(u + ": " + clean(e, u.password()));
        }
    }

    private static String clean(Throwable e, String password) {
        StringBuilder b = new StringBuilder();
        for (Throwable t = e; t != null && b.length() < 300; t = t.getCause()) {
            if (t.getMessage() != null && !b.toString().contains(t.getMessage())) {
                b.append(b.isEmpty() ? "" : ": ").append(t.getMessage());
            }
        }
        String m = b.isEmpty() ? e.getClass().getSimpleName() : b.toString().replace('\n', ' ');
        return password != null && !password.isEmpty() ? m.replace(password, "***") : m;
    }

    private static byte[] key(String k) {
        return (PREFIX + k).getBytes(StandardCharsets.US_ASCII);
    }

    @Override
    public byte[] get(String k) throws IOException {
        try {
            return jedis.get(key(k));
        } catch (JedisException e) {
            throw new IOException(where + ": " + clean(e, password));
        }
    }

    @Override
    public void put(String k, byte[] block) throws IOException {
        try {
            jedis.set(key(k), block);
        } catch (JedisException e) {
            throw new IOException(where + ": " + clean(e, password));
        }
    }

    @Override
    public boolean contains(String k) throws IOException {
        try {
            return jedis.exists(key(k));
        } catch (JedisException e) {
            throw new IOException(where + ": " + clean(e, password));
        }
    }

    @Override
    public String describe() {
        return where;
    }

    @Override
    public void close() {
        try {
            jedis.close();
        } catch (RuntimeException e) {
            // closing a broken connection: nothing to recover
        }
    }

    @Override
    public String toString() {
        return "RedisBlockStore[" + where + "]";
    }
}
