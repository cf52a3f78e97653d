package io.kvquant.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * The {@code kvq} command: one entry point for every tool in the project. Subcommands live
 * beside the code they drive; this class only wires them together and owns {@code System.exit}.
 */
@Command(name = "kvq",
        mixinStandardHelpOptions = true,
        version = "kvq 0.1.0",
        description = "kvquant: TurboQuant KV-cache compression for LLM inference in Java.",
        subcommands = {
                io.kvquant.demo.cli.GenerateCommand.class,
                io.kvquant.demo.cli.PrepareCommand.class,
                Kvq.Eval.class,
                Kvq.Bench.class,
        })
public final class Kvq implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(System.err);
    }

    @Command(name = "eval", mixinStandardHelpOptions = true,
            description = "Evaluation: distortion figures, perplexity, needle in a haystack.",
            subcommands = {
                    io.kvquant.eval.distortion.DistortionCommand.class,
                    io.kvquant.eval.quality.PerplexityCommand.class,
                    io.kvquant.eval.quality.NeedleCommand.class,
            })
    static final class Eval implements Runnable {
        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public void run() {
            spec.commandLine().usage(System.err);
        }
    }

    @Command(name = "bench", mixinStandardHelpOptions = true,
            description = "Benchmarks: codec throughput, decode attention.",
            subcommands = {
                    io.kvquant.eval.bench.CodecBenchCommand.class,
                    io.kvquant.eval.bench.AttentionBenchCommand.class,
                    io.kvquant.eval.bench.CacheBenchCommand.class,
                    io.kvquant.eval.bench.GenerateBenchCommand.class,
                    io.kvquant.eval.bench.BenchModelCommand.class,
            })
    static final class Bench implements Runnable {
        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public void run() {
            spec.commandLine().usage(System.err);
        }
    }

    public static void main(String[] args) {
        // generated text is UTF-8 whatever the platform's default console encoding
        System.setOut(new java.io.PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), true,
                java.nio.charset.StandardCharsets.UTF_8));
        CommandLine cl = new CommandLine(new Kvq());
        cl.setExecutionExceptionHandler(new UserErrors());
        System.exit(cl.execute(args));
    }
}
