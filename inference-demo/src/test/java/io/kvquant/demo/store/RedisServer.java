package io.kvquant.demo.store;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;

/**
 * A throwaway Redis (Debian's redis-server, or valkey-server) on a free loopback port with its
 * own directory and no persistence, for tests. Skips the calling test, with the reason printed,
 * only when no server binary is installed (.ci/run installs one).
 */
final class RedisServer implements AutoCloseable {

    final int port;
    private final Process process;

    private RedisServer(int port, Process process) {
        this.port = port;
        this.process = process;
    }

    static Path binary() {
        for (String name : new String[] {"redis-server", "valkey-server"}) {
            for (String dir : (System.getenv("PATH") + ":/usr/bin:/usr/sbin:/usr/local/bin").split(":")) {
                Path p = Path.of(dir, name);
                if (!dir.isEmpty() && Files.isExecutable(p)) {
                    return p;
                }
            }
        }
        return null;
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    /** Starts a server; {@code extra} are more redis-server arguments (e.g. "--requirepass", "..."). */
    static RedisServer start(Path dir, String... extra) throws IOException, InterruptedException {
        Path bin = binary();
        if (bin == null) {
            String why = "redis-server/valkey-server not installed (apt-get install redis-server; .ci/run does it)";
            System.out.println("SKIPPED Redis test: " + why);
            Assumptions.abort(why);
        }
        Files.createDirectories(dir);
        int port = freePort();
        List<String> cmd = new ArrayList<>(List.of(bin.toString(), "--port", Integer.toString(port), "--bind", "127.0.0.1",
                "--dir", dir.toString(), "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile",
                dir.resolve("redis.log").toString()));
        cmd.addAll(List.of(extra));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(dir.resolve("stdout.log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (System.nanoTime() < deadline) {
            if (!p.isAlive()) {
                throw new IOException("redis-server exited with " + p.exitValue() + ": " + Files.readString(dir.resolve("stdout.log"))
                        + (Files.exists(dir.resolve("redis.log")) ? Files.readString(dir.resolve("redis.log")) : ""));
            }
            try (Socket s = new Socket(InetAddress.getLoopbackAddress(), port)) {
                return new RedisServer(port, p);
            } catch (IOException e) {
                Thread.sleep(50);
            }
        }
        p.destroyForcibly();
        throw new IOException("redis-server did not listen on port " + port + " within 20 s");
    }

    String url() {
        return "redis://127.0.0.1:" + port;
    }

    @Override
    public void close() throws InterruptedException {
        process.destroy();
        if (!process.waitFor(10, TimeUnit.SECONDS)) {
            process.destroyForcibly().waitFor();
        }
    }
}
