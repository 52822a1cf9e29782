package local.outboundscim.kafka;

import java.util.Arrays;
import java.util.Collections;
import java.util.EnumSet;
import java.util.Properties;
import java.util.Set;
import java.util.stream.Collectors;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.StringSerializer;
import org.jboss.logging.Logger;
import org.keycloak.Config;
import org.keycloak.events.EventListenerProvider;
import org.keycloak.events.EventListenerProviderFactory;
import org.keycloak.events.EventType;
import org.keycloak.models.KeycloakSession;
import org.keycloak.models.KeycloakSessionFactory;

/**
 * Test-only stand-in for SnuK87/keycloak-kafka: the same record format (null key, Jackson JSON of
 * Keycloak's Event / AdminEvent, no headers) and the same settings, but each send is synchronous so
 * that an admin REST call returns only once its event is on the broker.
 *
 * <p>Settings, each an SPI option ({@code --spi-events-listener--outbound-scim-test-kafka--<name>}) or
 * else an environment variable:
 * <ul>
 *   <li>bootstrapServers / KAFKA_BOOTSTRAP_SERVERS: the broker (without it the listener drops events)</li>
 *   <li>topicEvents / KAFKA_TOPIC: topic for user events</li>
 *   <li>topicAdminEvents / KAFKA_ADMIN_TOPIC: topic for admin events; admin events only when set</li>
 *   <li>events / KAFKA_EVENTS: comma list of user event types to send (default REGISTER)</li>
 *   <li>clientId / KAFKA_CLIENT_ID (default outbound-scim-test-kafka)</li>
 *   <li>sendTimeoutMs / KAFKA_SEND_TIMEOUT_MS: bound of one synchronous send (default 10000)</li>
 * </ul>
 */
public class KafkaEventListenerProviderFactory implements EventListenerProviderFactory {

    public static final String ID = "outbound-scim-test-kafka";
    private static final Logger LOG = Logger.getLogger(KafkaEventListenerProviderFactory.class);

    private String bootstrapServers;
    private String topicEvents;
    private String topicAdminEvents;
    private Set<EventType> events;
    private String clientId;
    private long sendTimeoutMs;
    private volatile Producer<String, String> producer;

    @Override
    public String getId() {
        return ID;
    }

    @Override
    public void init(Config.Scope config) {
        bootstrapServers = setting(config, "bootstrapServers", "KAFKA_BOOTSTRAP_SERVERS", null);
        topicEvents = setting(config, "topicEvents", "KAFKA_TOPIC", null);
        topicAdminEvents = setting(config, "topicAdminEvents", "KAFKA_ADMIN_TOPIC", null);
        clientId = setting(config, "clientId", "KAFKA_CLIENT_ID", ID);
        sendTimeoutMs = Long.parseLong(setting(config, "sendTimeoutMs", "KAFKA_SEND_TIMEOUT_MS", "10000"));
        events = EnumSet.noneOf(EventType.class);
        for (String name : setting(config, "events", "KAFKA_EVENTS", "REGISTER").split(",")) {
            try {
                if (!name.isBlank()) {
                    events.add(EventType.valueOf(name.trim()));
                }
            } catch (IllegalArgumentException e) {
                LOG.warnf("%s: ignoring unknown event type %s", ID, name);
            }
        }
        events = Collections.unmodifiableSet(events);
        LOG.infof("%s: bootstrap %s, user events %s -> %s, admin events -> %s", ID, bootstrapServers,
                events.stream().map(Enum::name).collect(Collectors.joining(",")), topicEvents, topicAdminEvents);
    }

    private static String setting(Config.Scope config, String option, String env, String fallback) {
        String value = config == null ? null : config.get(option);
        if (value == null || value.isBlank()) {
            value = System.getenv(env);
        }
        return value == null || value.isBlank() ? fallback : value.trim();
    }

    @Override
    public EventListenerProvider create(KeycloakSession session) {
        return new KafkaEventListenerProvider(this);
    }

    @Override
    public void postInit(KeycloakSessionFactory factory) {
    }

    /** The shared producer, made on first use (null when no broker is configured). */
    Producer<String, String> producer() {
        if (bootstrapServers == null) {
            return null;
        }
        Producer<String, String> current = producer;
        if (current == null) {
            synchronized (this) {
                current = producer;
                if (current == null) {
                    producer = current = newProducer();
                }
            }
        }
        return current;
    }

    private Producer<String, String> newProducer() {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers);
        props.put(ProducerConfig.CLIENT_ID_CONFIG, clientId);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, String.valueOf(sendTimeoutMs));
        props.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, String.valueOf(sendTimeoutMs));
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, String.valueOf(sendTimeoutMs + 1000));
        // kafka-clients loads configured classes through the context class loader: make it ours.
        Thread thread = Thread.currentThread();
        ClassLoader previous = thread.getContextClassLoader();
        thread.setContextClassLoader(KafkaEventListenerProviderFactory.class.getClassLoader());
        try {
            return new KafkaProducer<>(props, new StringSerializer(), new StringSerializer());
        } finally {
            thread.setContextClassLoader(previous);
        }
    }

    String topicEvents() {
        return topicEvents;
    }

    String topicAdminEvents() {
        return topicAdminEvents;
    }

    boolean sends(EventType type) {
        return events.contains(type);
    }

    long sendTimeoutMs() {
        return sendTimeoutMs;
    }

    @Override
    public void close() {
        Producer<String, String> current = producer;
        producer = null;
        if (current != null) {
            current.close(java.time.Duration.ofSeconds(5));
        }
    }

    @Override
    public String toString() {
        return ID + Arrays.asList(bootstrapServers, topicEvents, topicAdminEvents);
    }
}
