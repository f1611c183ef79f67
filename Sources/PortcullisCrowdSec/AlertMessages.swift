// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials

/// The JSON the alert push sends and reads, as CrowdSec 1.4's Local API names it.
enum AlertMessages {
    /// A `/v1/watchers/login` request.
    struct Login: Encodable {
        /// nil by certificate (the keys are left out).
        let machineID: String?
        let password: String?
        let scenarios: [String] = []

        enum CodingKeys: String, CodingKey {
            case machineID = "machine_id"
            case password, scenarios
        }
    }

    /// Its answer: the token, and when it ends (RFC 3339) when that can be read.
    struct LoginAnswer: Decodable {
        let token: String
        let expire: String?

        enum CodingKeys: String, CodingKey {
            case token, expire
        }

        init(from decoder: Decoder) throws {
            let fields = try decoder.container(keyedBy: CodingKeys.self)
            token = try fields.decode(String.self, forKey: .token)
            // An end of another type is as good as none: the token is renewed in 10 minutes then.
            expire = try? fields.decodeIfPresent(String.self, forKey: .expire)
        }

        /// Seconds from now to `expire`, or nil when it is not an RFC 3339 time.
        func secondsLeft(now: Date = Date()) -> Double? {
            guard let expire, let end = try? Date(expire, strategy: .iso8601) else { return nil }
            return end.timeIntervalSince(now)
        }
    }

    /// One alert of a `/v1/alerts` request: the fields the LAPI requires.
    struct Alert: Encodable {
        let scenario: String
        let scenarioHash = ""
        let scenarioVersion = ""
        let message: String
        let capacity: Int
        let eventsCount: Int
        let leakSpeed: String
        let simulated = false
        let remediation = true
        let startAt: String
        let stopAt: String
        let source: Source
        let events: [String] = []
        /// Absent unless the alert carries its decision.
        let decisions: [Decision]?

        enum CodingKeys: String, CodingKey {
            case scenario, message, capacity, simulated, remediation, source, events, decisions
            case scenarioHash = "scenario_hash"
            case scenarioVersion = "scenario_version"
            case eventsCount = "events_count"
            case leakSpeed = "leakspeed"
            case startAt = "start_at"
            case stopAt = "stop_at"
        }
    }

    /// An alert's source: `ip` for an address, `range` for a network.
    struct Source: Encodable {
        let scope: String
        let value: String
        let ip: String?
        let range: String?
    }

    struct Decision: Encodable {
        let type = "ban"
        let duration: String
        let value: String
        let scope: String
        let origin = "crowdsec"
        let scenario: String
    }
}
