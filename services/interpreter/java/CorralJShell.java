// The Java kernel's evaluator: JShell in this JVM, driven by the Python kernel
// (services/interpreter/java_kernel.py) over a line protocol. Commands arrive on stdin,
// answers leave on the file descriptor its argument names; the user's code keeps stdout and stderr to itself.
// Every field is base64 (UTF-8), so no JSON library is needed here.
//
//   EVAL <code>            -> OK <value or empty>  |  ERR <name> <message> <traceback>
//   SETENV <name> <value>  -> OK                   (System.getenv and child processes see it)
//   UNSETENV <name>        -> OK
//   STOP                   (no answer: the running EVAL ends with ERR Interrupted)
import java.io.BufferedReader;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.stream.Collectors;
import jdk.jshell.Diag;
import jdk.jshell.EvalException;
import jdk.jshell.JShell;
import jdk.jshell.JShellException;
import jdk.jshell.Snippet;
import jdk.jshell.SnippetEvent;
import jdk.jshell.SourceCodeAnalysis;
import jdk.jshell.UnresolvedReferenceException;

public final class CorralJShell {
    private static final Base64.Encoder ENCODE = Base64.getEncoder();
    private static final Base64.Decoder DECODE = Base64.getDecoder();

    private final JShell shell = JShell.builder().executionEngine("local").build();
    private final PrintStream answers;

    private CorralJShell(PrintStream answers) {
        this.answers = answers;
    }

    public static void main(String[] args) throws Exception {
        PrintStream answers = new PrintStream(new FileOutputStream("/proc/self/fd/" + args[0]), true, StandardCharsets.UTF_8);
        CorralJShell kernel = new CorralJShell(answers);
        kernel.shell.eval("int __corral_warm = 0;"); // loads the compiler before the first request
        kernel.answer("READY");
        kernel.serve(new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)));
    }

    private void serve(BufferedReader commands) throws Exception {
        ExecutorService worker = Executors.newSingleThreadExecutor();
        String line;
        while ((line = commands.readLine()) != null) {
            String[] parts = line.split(" ", -1);
            switch (parts[0]) {
                case "EVAL" -> {
                    String code = text(parts[1]);
                    worker.submit(() -> answer(evaluate(code)));
                }
                case "STOP" -> shell.stop();
                case "SETENV" -> {
                    worker.submit(() -> answer(setEnv(text(parts[1]), text(parts[2]))));
                }
                case "UNSETENV" -> worker.submit(() -> answer(setEnv(text(parts[1]), null)));
                default -> answer("ERR " + field("ProtocolError") + " " + field(line) + " " + field(""));
            }
        }
        worker.shutdownNow();
        System.exit(0);
    }

    private synchronized void answer(String line) {
        System.out.flush();
        System.err.flush();
        answers.println(line);
    }

    /** Evaluates the snippets of `code` in order; the value of the last one is the result. */
    private String evaluate(String code) {
        SourceCodeAnalysis analysis = shell.sourceCodeAnalysis();
        String remaining = code;
        String value = "";
        while (!remaining.isBlank()) {
            SourceCodeAnalysis.CompletionInfo info = analysis.analyzeCompletion(remaining);
            switch (info.completeness()) {
                case EMPTY:
                    return "OK " + field(value);
                case DEFINITELY_INCOMPLETE:
                case CONSIDERED_INCOMPLETE:
                    return error("CompilationException", "incomplete input: " + remaining.strip(), "");
                case UNKNOWN:
                    return compileError(shell.eval(remaining));
                default:
                    break;
            }
            remaining = info.remaining();
            List<SnippetEvent> events = shell.eval(info.source());
            value = "";
            for (SnippetEvent event : events) {
                if (event.causeSnippet() != null) {
                    continue;
                }
                if (event.status() == Snippet.Status.REJECTED) {
                    return compileError(events);
                }
                JShellException thrown = event.exception();
                if (thrown != null) {
                    return thrownError(thrown);
                }
                if (event.status() == Snippet.Status.RECOVERABLE_NOT_DEFINED
                        || event.status() == Snippet.Status.RECOVERABLE_DEFINED) {
                    String missing = shell.unresolvedDependencies((jdk.jshell.DeclarationSnippet) event.snippet())
                            .collect(Collectors.joining(", "));
                    if (event.status() == Snippet.Status.RECOVERABLE_NOT_DEFINED) {
                        return error("CompilationException", "cannot find symbol: " + missing, "");
                    }
                }
                Snippet.Kind kind = event.snippet().kind();
                boolean expression = kind == Snippet.Kind.EXPRESSION
                        || (kind == Snippet.Kind.VAR
                                && event.snippet().subKind() == Snippet.SubKind.TEMP_VAR_EXPRESSION_SUBKIND);
                if (expression && event.value() != null) {
                    value = event.value();
                }
            }
        }
        return "OK " + field(value);
    }

    private String compileError(List<SnippetEvent> events) {
        List<String> messages = new ArrayList<>();
        for (SnippetEvent event : events) {
            for (Diag diag : shell.diagnostics(event.snippet()).collect(Collectors.toList())) {
                if (diag.isError()) {
                    messages.add(diag.getMessage(null));
                }
            }
        }
        String message = messages.isEmpty() ? "the code does not compile" : String.join("\n", messages);
        return error("CompilationException", message, message);
    }

    private String thrownError(JShellException thrown) {
        if (thrown instanceof UnresolvedReferenceException unresolved) {
            String missing = shell.unresolvedDependencies(unresolved.getSnippet()).collect(Collectors.joining(", "));
            return error("CompilationException", "cannot find symbol: " + missing, "");
        }
        String name = thrown instanceof EvalException eval ? eval.getExceptionClassName() : thrown.getClass().getName();
        if (name.endsWith("StoppedException")) {
            return error("Interrupted", "the execution was interrupted", "");
        }
        StringBuilder trace = new StringBuilder(name + ": " + thrown.getMessage());
        for (StackTraceElement element : thrown.getStackTrace()) {
            trace.append("\n\tat ").append(element);
        }
        return error(name, thrown.getMessage() == null ? "" : thrown.getMessage(), trace.toString());
    }

    @SuppressWarnings("unchecked")
    private String setEnv(String name, String value) {
        // The JVM's environment is read-only by design; code here expects System.getenv and the
        // processes it starts to see what the interpreter sets (as in the other languages).
        try {
            Class<?> environment = Class.forName("java.lang.ProcessEnvironment");
            Field readOnly = environment.getDeclaredField("theUnmodifiableEnvironment");
            readOnly.setAccessible(true);
            Field inner = Class.forName("java.util.Collections$UnmodifiableMap").getDeclaredField("m");
            inner.setAccessible(true);
            Map<String, String> strings = (Map<String, String>) inner.get(readOnly.get(null));
            Field raw = environment.getDeclaredField("theEnvironment");
            raw.setAccessible(true);
            Map<Object, Object> bytes = (Map<Object, Object>) raw.get(null);
            Method variable = Class.forName("java.lang.ProcessEnvironment$Variable").getDeclaredMethod("valueOf", String.class);
            variable.setAccessible(true);
            Object key = variable.invoke(null, name);
            if (value == null) {
                strings.remove(name);
                bytes.remove(key);
            } else {
                Method data = Class.forName("java.lang.ProcessEnvironment$Value").getDeclaredMethod("valueOf", String.class);
                data.setAccessible(true);
                strings.put(name, value);
                bytes.put(key, data.invoke(null, value));
            }
            return "OK " + field("");
        } catch (ReflectiveOperationException | RuntimeException exc) {
            return error(exc.getClass().getName(), String.valueOf(exc.getMessage()), "");
        }
    }

    private static String error(String name, String message, String traceback) {
        return "ERR " + field(name) + " " + field(message) + " " + field(traceback);
    }

    private static String field(String text) {
        return ENCODE.encodeToString(text.getBytes(StandardCharsets.UTF_8));
    }

    private static String text(String field) {
        return new String(DECODE.decode(field), StandardCharsets.UTF_8);
    }
}
