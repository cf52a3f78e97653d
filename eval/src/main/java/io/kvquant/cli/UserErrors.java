package io.kvquant.cli;

import picocli.CommandLine;

/**
 * Turns exceptions that stem from user input into a one-line message and exit code 2,
 * keeping stack traces for genuine bugs (and for {@code -Dkvq.debug=true}).
 */
final class UserErrors implements CommandLine.IExecutionExceptionHandler {
    @Override
    public int handleExecutionException(Exception ex, CommandLine cl, CommandLine.ParseResult pr) {
        boolean debug = Boolean.getBoolean("kvq.debug");
        if (!debug && (ex instanceof IllegalArgumentException
                || ex instanceof IllegalStateException
                || ex instanceof java.io.UncheckedIOException
                || ex instanceof java.io.IOException
                || ex instanceof UnsupportedOperationException)) {
            cl.getErr().println("kvq " + cl.getCommandName() + ": " + ex.getMessage());
            return 2;
        }
        ex.printStackTrace(cl.getErr());
        return 1;
    }
}
