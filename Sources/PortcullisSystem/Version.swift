// SPDX-License-Identifier: Apache-2.0
/// The one version of Portcullis: `portcullis --version`, `portcullisd --version` and the Debian
/// package (tools/package reads it from this line) all say it.
public enum PortcullisVersion {
    public static let current = "0.12.0"
}
