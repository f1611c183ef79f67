import Glibc

/// Output for operators: whole lines, unbuffered (status lines must appear as they happen, also
/// when piped), and the one-line error exit of the programs.
public enum Console {
    /// Writes `line` and a newline to `fd` in one `write`.
    public static func say(_ line: String, to fd: Int32 = STDOUT_FILENO) {
        var text = line + "\n"
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { return }
                offset += written
            }
        }
    }

    /// Prints `message` on stderr and exits with status 1.
    public static func fail(_ message: String) -> Never {
        say(message, to: STDERR_FILENO)
        exit(1)
    }
}
