import Foundation
import PortcullisConfiguration
import Testing

/// A configuration file with `text`, removed when `body` returns.
private func withFile<T>(_ text: String, _ body: (String) throws -> T) throws -> T {
    let path = NSTemporaryDirectory() + "pc-loader-test-\(getpid())-\(UUID().uuidString.prefix(8)).toml"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    defer { unlink(path) }
    return try body(path)
}

@Suite("Configuration loader")
struct ConfigurationLoaderTests {
    @Test("the arguments it is given come after the [daemon] settings of their --config, so the flags win")
    func flagsAfterTheFileSettings() throws {
        try withFile(
            """
            [daemon]
            interface = "lo"
            workers = 2
            pin-dir = "/sys/fs/bpf/from-file"
            """
        ) { path in
            let loader = ConfigurationLoader(arguments: ["--config", path, "--workers", "3"])
            let arguments = try loader.withFileSettings()
            #expect(Array(arguments.suffix(4)) == ["--config", path, "--workers", "3"] && arguments.count > 4)
            let options = try DaemonOptions.parse(arguments)
            #expect(options.workers == 3)
            #expect(options.interfaces == ["lo"])
            #expect(options.restartOnly.pinDir == "/sys/fs/bpf/from-file")
            #expect(options.restartOnly.interface == ["lo"])
        }
    }

    @Test("without --config the arguments are taken as they are; the last --config (either spelling) names the file")
    func configurationPath() throws {
        #expect(try ConfigurationLoader(arguments: ["--workers", "2"]).withFileSettings() == ["--workers", "2"])
        #expect(ConfigurationLoader.configurationPath(in: ["--config", "a.toml", "--config=b.toml"]) == "b.toml")
        #expect(ConfigurationLoader.configurationPath(in: ["--config=b.toml", "--config", "a.toml"]) == "a.toml")
        #expect(ConfigurationLoader.configurationPath(in: ["--", "--config", "a.toml"]) == nil)
    }

    @Test("a bad [daemon] value is named with its file, line and key, as its flag would refuse it")
    func badDaemonValueNamed() throws {
        try withFile(
            """
            [daemon]
            interface = "lo"
            mode = "sideways"
            """
        ) { path in
            do throws(ConfigurationError) {
                _ = try ConfigurationLoader(arguments: ["--config", path]).withFileSettings()
                Issue.record("a bad mode was taken")
            } catch {
                #expect(error.file == path && error.line == 3 && error.key?.hasSuffix("mode") == true, "\(error)")
            }
        }
    }

    @Test("a changed restart-only flag shows in the settings a reload compares; a reloadable one does not")
    func restartOnlySettings() throws {
        let running = try DaemonOptions.parse(["--interface", "lo", "--workers", "1"]).restartOnly
        #expect(try DaemonOptions.parse(["--interface", "lo", "--workers", "4"]).restartOnly == running)
        #expect(try DaemonOptions.parse(["--interface", "lo", "--map-entries", "10"]).restartOnly != running)
        #expect(try DaemonOptions.parse(["--interface", "lo", "--metrics", "127.0.0.1:0"]).restartOnly != running)
    }
}
